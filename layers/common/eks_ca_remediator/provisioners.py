"""How each provisioner tags the EC2 instances it launches as nodes: the one list.

Recognition (decisions.py), the EC2 queries for a cluster's nodes (adapters/ec2.py), the IAM
policies that let us send the document (template.yaml, member-account.yaml) and the README's
node-recognition table all derive from PROVISIONERS or are checked against it by a test
(tests/unit/test_provisioners.py, tests/unit/test_send_policy.py).

A tag names the cluster either in its VALUE (NameTag: `eks:cluster-name` = prod-a) or in its KEY
(NameInKey: `kubernetes.io/cluster/prod-a` = owned). IAM matches the first kind with one
condition over the list of enrolled clusters, the second kind only with one condition per
cluster (the key differs per cluster).

Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NameTag:
    """The tag's value is the cluster name."""

    key: str

    def render(self, cluster: str) -> tuple[str, str]:
        return self.key, cluster

    def describe(self) -> str:
        return f"`{self.key}` = <cluster>"


@dataclass(frozen=True)
class NameInKey:
    """The tag's key is `prefix` + the cluster name; its value is one of `values`."""

    prefix: str
    values: tuple[str, ...]

    def render(self, cluster: str) -> tuple[str, str]:
        return self.prefix + cluster, self.values[0]

    def describe(self) -> str:
        return f"`{self.prefix}<cluster>` = {' or '.join(self.values)}"


@dataclass(frozen=True)
class Provisioner:
    key: str  # short id (tests launch nodes by it)
    name: str
    # The tags that name the cluster; each one alone is enough to recognise the node.
    names_cluster: tuple[NameTag | NameInKey, ...]
    # Other tags it puts on every node (not used for recognition; they make test nodes real).
    other_tags: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def tags_for(self, cluster: str) -> dict[str, str]:
        """The tags a node of `cluster` launched by this provisioner carries (an other tag's key may
        name the cluster: `{cluster}`)."""
        others = {k.format(cluster=cluster): v for k, v in self.other_tags.items()}
        return dict(tag.render(cluster) for tag in self.names_cluster) | others


KUBERNETES_CLUSTER = "kubernetes.io/cluster/"
CAPA_CLUSTER = "sigs.k8s.io/cluster-api-provider-aws/cluster/"

PROVISIONERS: tuple[Provisioner, ...] = (
    Provisioner(
        "eks",
        "EKS managed node groups",
        (NameTag("eks:cluster-name"),),
        {"eks:nodegroup-name": "ng-1"},
        sources=(
            # Managed nodes are launched by EKS's Auto Scaling group and tagged by EKS.
            "https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html",
            "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSServiceRoleForAmazonEKSNodegroup.html",
        ),
    ),
    Provisioner(
        "karpenter",
        "Karpenter v1 (and EKS Auto Mode)",
        (NameTag("eks:eks-cluster-name"), NameInKey(KUBERNETES_CLUSTER, ("owned",))),
        {"karpenter.sh/nodepool": "default", "karpenter.k8s.aws/ec2nodeclass": "default"},
        sources=(
            # getTags: kubernetes.io/cluster/<name>=owned, karpenter.sh/nodepool, eks:eks-cluster-name,
            # karpenter.k8s.aws/ec2nodeclass on every instance it launches.
            "aws/karpenter-provider-aws pkg/cloudprovider/cloudprovider.go (getTags, staticTags)",
            # "karpenter.sh/managed-by ... is replaced by eks:eks-cluster-name"
            "aws/karpenter-provider-aws website/content/en/docs/upgrading/v1-migration.md",
            # EKS Auto Mode's built-in Karpenter: RunInstances requires aws:RequestTag/eks:eks-cluster-name
            "https://docs.aws.amazon.com/eks/latest/userguide/auto-cluster-iam-role.html",
        ),
    ),
    Provisioner(
        "karpenter-v0",
        "Karpenter v0.32-v0.37",
        (NameTag("karpenter.sh/managed-by"),),
        {"karpenter.sh/nodepool": "default"},
        sources=(
            # "karpenter.sh/managed-by, which currently stores the cluster name in its value"
            "aws/karpenter-provider-aws website/content/en/docs/upgrading/v1-migration.md",
        ),
    ),
    Provisioner(
        "eksctl",
        "eksctl self-managed node groups",
        (NameTag("alpha.eksctl.io/cluster-name"), NameInKey(KUBERNETES_CLUSTER, ("owned",))),
        {"alpha.eksctl.io/nodegroup-name": "ng-1"},
        sources=(
            # ClusterNameTag = "alpha.eksctl.io/cluster-name": a stack tag of every eksctl stack,
            # which CloudFormation propagates to the node group's instances
            "eksctl-io/eksctl pkg/apis/eksctl.io/v1alpha5/types.go, pkg/cfn/manager/api.go (NewStackCollection)",
            # the Auto Scaling group: kubernetes.io/cluster/<name> = owned, PropagateAtLaunch
            "eksctl-io/eksctl pkg/cfn/builder/nodegroup.go",
        ),
    ),
    Provisioner(
        "terraform",
        "terraform-aws-eks self-managed node groups",
        (NameInKey(KUBERNETES_CLUSTER, ("owned",)),),
        {"k8s.io/cluster/{cluster}": "owned"},
        sources=(
            # aws_autoscaling_group tags, propagate_at_launch: kubernetes.io/cluster/<name> = owned,
            # k8s.io/cluster/<name> = owned
            "terraform-aws-modules/terraform-aws-eks modules/self-managed-node-group/main.tf",
        ),
    ),
    Provisioner(
        "capa",
        "Cluster API Provider AWS (CAPA)",
        (NameInKey(CAPA_CLUSTER, ("owned",)), NameInKey(KUBERNETES_CLUSTER, ("owned",))),
        {"sigs.k8s.io/cluster-api-provider-aws/role": "node"},
        sources=(
            # NameAWSProviderOwned = "sigs.k8s.io/cluster-api-provider-aws/cluster/" (ClusterTagKey),
            # NameKubernetesAWSCloudProviderPrefix = "kubernetes.io/cluster/"
            "kubernetes-sigs/cluster-api-provider-aws api/v1beta2/tags.go",
            # instances: infrav1.Build(owned, role node) plus the cloud-provider tag, owned
            "kubernetes-sigs/cluster-api-provider-aws pkg/cloud/services/ec2/instances.go",
        ),
    ),
    Provisioner(
        "self-managed",
        "Any other tool (the Kubernetes cloud-provider tag)",
        (NameInKey(KUBERNETES_CLUSTER, ("owned", "shared")),),
        sources=("https://docs.aws.amazon.com/eks/latest/userguide/worker.html",),
    ),
)


# Derived: the keys whose value names a cluster, and the key prefixes with the values they take.
BY_KEY: dict[str, Provisioner] = {p.key: p for p in PROVISIONERS}
NAME_TAG_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(t.key for p in PROVISIONERS for t in p.names_cluster if isinstance(t, NameTag))
)


def _name_in_key_prefixes() -> dict[str, tuple[str, ...]]:
    prefixes: dict[str, tuple[str, ...]] = {}
    for provisioner in PROVISIONERS:
        for tag in provisioner.names_cluster:
            if isinstance(tag, NameInKey):
                prefixes[tag.prefix] = tuple(dict.fromkeys(prefixes.get(tag.prefix, ()) + tag.values))
    return prefixes


NAME_IN_KEY_PREFIXES: dict[str, tuple[str, ...]] = _name_in_key_prefixes()
