"""The reconciler's fault test: no single attempt or account stops a pass.

One pass over 1,000 overdue open attempts (central mode) in which GetCommandInvocation answers a few
attempts with each error SSM documents for it (botocore's SSM model: InternalServerError,
InvalidCommandId, InvalidInstanceId, InvalidPluginName, InvocationDoesNotExist) and with throttling
and AccessDenied, and one member account whose role cannot be assumed. The poison attempts are the
oldest, so they come first in the open-attempts index.
"""

from __future__ import annotations

import uuid
from collections import Counter

from eks_ca_remediator import wiring
from eks_ca_remediator.adapters.records import OPEN, OPEN_MARK, RECONCILE_AT
from eks_ca_remediator.errors import MemberAccessDenied
from eks_ca_remediator.reconcile import MAX_READ_ERRORS, RETRY_CAP_SECONDS, result_due

from tests.fakes.open_attempts import sent_attempt
from tests.fakes.run_command import Invocation
from tests.fakes.world import World, node_output
from tests.integration.test_central_mode import MEMBER, Member, add_member_node, central_world

UNREACHABLE = "222222222222"
TOTAL = 1000
MEMBER_ATTEMPTS = 20
UNREACHABLE_ATTEMPTS = 10
# error code -> GetCommandInvocation calls it answers with it (None: every call)
POISON = {
    "InternalServerError": 2,
    "ThrottlingException": 3,
    "InvalidInstanceId": None,
    "InvalidPluginName": None,
    "AccessDeniedException": None,
    "InvalidCommandId": None,
    "InvocationDoesNotExist": None,
}


def seed(world: World, member: Member) -> dict[str, dict]:
    """Open SENT attempts, overdue, as dispatch leaves them; returns them by kind (code, or
    'member', 'unreachable', 'ok') and instance id."""
    home_nodes = world.add_nodes(TOTAL - MEMBER_ATTEMPTS - UNREACHABLE_ATTEMPTS, cluster="prod-a")
    member_nodes = [add_member_node(world, member) for _ in range(MEMBER_ATTEMPTS)]
    unreachable_nodes = [f"i-{n:017x}" for n in range(UNREACHABLE_ATTEMPTS)]
    sent_at = world.clock() - 7200
    due = result_due(sent_at, world.settings.command_timeout_seconds)
    rows = (
        [(node, None, kind) for node, kind in zip(home_nodes, list(POISON), strict=False)]
        + [(node, None, "ok") for node in home_nodes[len(POISON) :]]
        + [(node, MEMBER, "member") for node in member_nodes]
        + [(node, UNREACHABLE, "unreachable") for node in unreachable_nodes]
    )
    seeded: dict[str, dict] = {}
    with world.table.batch_writer() as batch:
        for n, (node, account, kind) in enumerate(rows):
            command_id = str(uuid.uuid4())
            # the poison attempts first in the index, oldest first
            item = sent_attempt(node, f"fault-{n}", command_id, sent_at, int(due) + n, account)
            batch.put_item(Item=item)
            ssm = member.ssm if account == MEMBER else world.ssm
            invocation = Invocation(command_id, node, "Success", "Success", node_output(), "installed")
            ssm.invocations[(command_id, node)] = invocation
            if kind in POISON:
                world.ssm.fail_invocation(command_id, kind, POISON[kind])
            seeded[node] = item | {"kind": kind}
    return seeded


def unreachable_member_session(reachable):
    def member_session(role_arn: str, account: str):
        if account == UNREACHABLE:  # as clients.assume_member says it when STS refuses
            raise MemberAccessDenied(f"cannot assume {role_arn} in account {account}: AccessDenied")
        return reachable(role_arn, account)

    return member_session


def by_node(world: World) -> dict[str, dict]:
    """Every attempt by its node (a paginated scan: 1,000 attempts are more than one page)."""
    found: dict[str, dict] = {}
    kwargs: dict = {}
    while True:
        page = world.table.scan(**kwargs)
        found |= {i["pk"]: i for i in page["Items"] if i["sk"].startswith("ATTEMPT#")}
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_one_pass_finishes_every_attempt_but_the_poison_ones_and_the_unreachable_accounts():
    with central_world(BREAKER_FAILURE_THRESHOLD="3") as (world, member):
        wiring.member_session = unreachable_member_session(wiring.member_session)
        seeded = seed(world, member)
        kind = {node: item["kind"] for node, item in seeded.items()}
        assert len(seeded) == TOTAL

        first = world.reconcile()
        after = by_node(world)
        statuses = Counter((kind[n], a["status"]) for n, a in after.items())
        # every attempt but the poison ones SSM can still answer for, and the unreachable account's
        assert statuses[("ok", "SUCCEEDED")] == TOTAL - MEMBER_ATTEMPTS - UNREACHABLE_ATTEMPTS - len(POISON)
        assert statuses[("member", "SUCCEEDED")] == MEMBER_ATTEMPTS
        for gone in ("InvalidCommandId", "InvocationDoesNotExist"):  # SSM does not know them: final now
            [attempt] = [a for n, a in after.items() if kind[n] == gone]
            assert attempt["status"] == "TIMED_OUT"
            assert "SSM no longer knows it" in attempt["reason"]
        retried = {k for k in POISON if k not in ("InvalidCommandId", "InvocationDoesNotExist")}
        for n, attempt in after.items():
            if kind[n] in retried:
                assert attempt["status"] == "SENT", kind[n]
                assert attempt[RECONCILE_AT] > world.clock(), "looked at again later"
                assert kind[n].replace("Exception", "") in attempt["reconcile_error"]
        assert (first["overdue"], first["retrying"], first["throttled"]) == (TOTAL, len(retried), 1)
        assert (first["accounts_unreachable"], first["unreachable"]) == (1, UNREACHABLE_ATTEMPTS)
        assert first["repaired"] == TOTAL - UNREACHABLE_ATTEMPTS - len(retried)

        passes = 1
        while any(a["status"] == "SENT" for n, a in by_node(world).items() if kind[n] in retried):
            world.clock.advance(RETRY_CAP_SECONDS)
            world.reconcile()
            passes += 1
            assert passes <= MAX_READ_ERRORS + 1, "the poison attempts are final after their retries"
        final = by_node(world)
        result = {kind[n]: a for n, a in final.items() if kind[n] in retried}
        # the transient ones get their real result once SSM answers
        assert result["InternalServerError"]["status"] == "SUCCEEDED"
        assert result["ThrottlingException"]["status"] == "SUCCEEDED"
        # the others: what could not be reconciled says so, never SUCCEEDED
        for code in ("InvalidInstanceId", "InvalidPluginName", "AccessDeniedException"):
            attempt = result[code]
            assert attempt["status"] == "TIMED_OUT", code
            assert attempt["reason"].startswith("could not be reconciled"), attempt["reason"]
            assert f"{MAX_READ_ERRORS} times" in attempt["reason"]
            assert code in attempt["reason"]
            assert "open_attempt" not in attempt
        assert world.remediator.open_breaker("prod-a", world.clock()) is None, (
            "an attempt whose result could not be read says nothing about the node: the breaker stays closed"
        )
        # the unreachable account's attempts are not lost: open, and looked at later
        for n, attempt in final.items():
            if kind[n] == "unreachable":
                assert attempt["status"] == "SENT"
                assert attempt[OPEN_MARK] == OPEN
                assert attempt[RECONCILE_AT] > world.clock()
                assert f"member account {UNREACHABLE} unreachable" in attempt["reconcile_error"]
        assert passes == MAX_READ_ERRORS
