"""Both templates fit every quota with 1, 15, 50 and 100 enrolled clusters (issue #18).

tools/quotas.py renders a template for N clusters (Fn::ForEach expanded, SAM's roles as the
translator writes them) and measures each quota as the service counts it; the citations are
there. Cluster names are of a realistic length and of the longest length N names can have: EKS
allows 100 characters, and CloudFormation takes at most 4,096 bytes in one parameter value, so
100 clusters have names of at most 39 characters (15 clusters: 100). Past the most clusters a
stack takes, CloudFormation refuses the template before it creates anything.
"""

from __future__ import annotations

import pytest
from quotas import (
    CFN_PARAMETER_VALUE,
    CFN_RESOURCES,
    CFN_TEMPLATE_BODY,
    EKS_CLUSTER_NAME_MAX,
    HOME,
    HOME_PARAMETERS,
    IAM_INLINE_PER_ROLE,
    IAM_MANAGED_POLICY,
    MEMBER,
    MEMBER_PARAMETERS,
    cluster_names,
    longest_names,
    measure,
    most_clusters,
    size,
)

TEMPLATES = {"home": (HOME, HOME_PARAMETERS), "member": (MEMBER, MEMBER_PARAMETERS)}
REALISTIC = 24  # e.g. prod-eu-west-1-payments-7
COUNTS = (1, 15, 50, 100)
# The most clusters one stack enrolls (README, Configuration): each adds a role and a parameter.
MOST_HOME = 211
MOST_MEMBER = 247


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("length", ["realistic", "longest"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_quota_holds(template: str, length: str, count: int):
    path, parameters = TEMPLATES[template]
    names = cluster_names(count, REALISTIC if length == "realistic" else longest_names(count))
    figures = measure(path, names, parameters)
    print(figures.summary())
    assert figures.problems() == []
    assert figures.resources <= CFN_RESOURCES


def test_the_names_are_what_eks_and_cloudformation_allow():
    assert longest_names(1) == longest_names(15) == EKS_CLUSTER_NAME_MAX
    assert longest_names(100) == 39
    for count in COUNTS:
        names = cluster_names(count, longest_names(count))
        assert len(set(names)) == count
        assert len(",".join(names)) <= CFN_PARAMETER_VALUE
        if longest_names(count) < EKS_CLUSTER_NAME_MAX:  # one character more each would not fit
            assert len(",".join(names)) + count > CFN_PARAMETER_VALUE


def test_the_send_roles_do_not_grow_with_the_cluster_count():
    """What used to grow per cluster (statements on the sending roles) is a role of its own now:
    the largest inline aggregate is the same for 1 or 100 clusters of the same names' length."""
    for path, parameters in TEMPLATES.values():
        one, hundred = (measure(path, cluster_names(n, 39), parameters) for n in (1, 100))
        assert max(one.inline_by_role.values()) == max(hundred.inline_by_role.values())
        assert one.managed_policy_sizes == hundred.managed_policy_sizes
        assert max(hundred.inline_by_role.values()) < IAM_INLINE_PER_ROLE / 4


def test_a_stack_past_the_most_clusters_is_refused_before_anything_is_created():
    """CloudFormation validates a template's resource count when the change set is created
    (sam deploy: "Template format error: Number of resources, 501, is greater than maximum
    allowed, 500"), before any resource exists. README states the figure this checks."""
    for (path, parameters), most in ((TEMPLATES["home"], MOST_HOME), (TEMPLATES["member"], MOST_MEMBER)):
        assert most_clusters(path, parameters) == most
        at_most = measure(path, cluster_names(most, longest_names(most)), parameters)
        assert at_most.problems() == []  # every other quota holds there too (template 700 KB)
        assert measure(path, cluster_names(most + 1, 10), parameters).resources > CFN_RESOURCES


def test_the_templates_come_from_s3():
    """Over 51,200 bytes a template must be uploaded (sam deploy does; a StackSet takes its
    TemplateURL): the home template is, whatever the cluster count."""
    figures = measure(HOME, cluster_names(1, 10), HOME_PARAMETERS)
    assert figures.template_bytes > CFN_TEMPLATE_BODY


def test_sizes_are_counted_without_whitespace():
    assert size({"Version": "2012-10-17", "Statement": [{"Effect": "Allow"}]}) == len(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow"}]}'
    )
    assert IAM_MANAGED_POLICY == 6144
    assert IAM_INLINE_PER_ROLE == 10240
