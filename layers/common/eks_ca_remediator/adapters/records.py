"""The remediation records table (DynamoDB).

Items of one instance share the partition key `pk` = instance id:
- one item per remediation attempt, `sk` = `ATTEMPT#<created_at>#<trigger>#<key>`; the key is
  derived from what triggered it (EventBridge event id, Lambda request id), so a redelivered
  trigger maps to the same item and a conditional put makes it a no-op;
- one `HEAD` item holding the instance's in-flight claim: a conditional update lets exactly
  one attempt at a time send a command to the node, whatever the number of concurrent triggers.
Items of one cluster share `pk` = `CLUSTER#<key>` (models.ClusterRef: the bare name for the
deployment's own account, `<account>/<name>` for a member account's cluster): `BREAKER` (its circuit breaker and running-node
count), `IN_FLIGHT` (leases on the slots of its in-flight limit, safety.py), `ROLLOUT#<fingerprint>`
(the rollout of one CA bundle in waves, rollouts.py) and `GOOD_BUNDLE` (the bundle whose rollout
completed last: what launch, pull-failure and manual triggers send until the next one completes).
GSI `by-cluster` (cluster, created_at) lists a cluster's attempts (an attempt's `cluster` is its
cluster's key; `cluster_name`, `account` and `region` say it in parts) in a time range; the HEAD and
cluster items have no created_at and so stay out of it.
GSI `open-attempts` (open_attempt, reconcile_at) is sparse: only an attempt that is not final carries
`open_attempt` and `reconcile_at` (when its result is overdue, reconcile.py), and writing a final
status removes both, so the reconciler queries the overdue open attempts instead of scanning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from eks_ca_remediator.errors import RecordConflict
from eks_ca_remediator.models import ClusterRef, Status
from eks_ca_remediator.safety import grant_leases, live_leases

HEAD = "HEAD"
BREAKER = "BREAKER"
IN_FLIGHT = "IN_FLIGHT"  # sk of a cluster's in-flight leases (pk CLUSTER#<key>; safety.py)
LEASE_WRITE_ATTEMPTS = 5
CLUSTER_PK = (
    "CLUSTER#"  # + cluster key (ClusterRef.key): its BREAKER and IN_FLIGHT items (no created_at: not in the GSI)
)
ATTEMPT_PREFIX = "ATTEMPT#"
ROLLOUT_PREFIX = "ROLLOUT#"
GOOD_BUNDLE = "GOOD_BUNDLE"
CLUSTER_INDEX = "by-cluster"
OPEN_INDEX = "open-attempts"
OPEN_MARK = "open_attempt"  # "OPEN" on attempts that are not final (the sparse index's key)
RECONCILE_AT = "reconcile_at"  # epoch seconds: the attempt's result is overdue after it
OPEN = "OPEN"


def attempt_sk(created_at: str, trigger: str, key: str) -> str:
    return f"{ATTEMPT_PREFIX}{created_at}#{trigger}#{key}"


def _to_dynamo(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def _cluster_fields(cluster: ClusterRef) -> dict[str, str]:
    """What a cluster item says of its cluster: its name, and its account when not ours."""
    return {"cluster_name": cluster.name} | ({"account": cluster.account} if cluster.account else {})


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class Claim:
    won: bool
    holder: str | None
    in_flight: bool = False  # lost to another live attempt (else to the cooldown)
    last_finished_at: float | None = None


class RecordStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    # ------------------------------------------------------------ attempts

    def create_attempt(self, item: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Put a new attempt unless it exists. Returns (created, the item as stored). An attempt
        created final (e.g. NOT_REMEDIABLE) stays out of the open-attempts index."""
        if Status(item["status"]).terminal:
            item = {k: v for k, v in item.items() if k not in (OPEN_MARK, RECONCILE_AT)}
        try:
            self._table.put_item(Item=_to_dynamo(dict(item)), ConditionExpression=Attr("pk").not_exists())
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.get_attempt(item["pk"], item["sk"])
            if existing is None:  # pragma: no cover - deleted between the two calls
                raise RecordConflict(f"attempt {item['sk']} vanished during a conditional put") from exc
            return False, existing
        return True, dict(item)

    def get_attempt(self, instance_id: str, sk: str) -> dict[str, Any] | None:
        raw = self._table.get_item(Key={"pk": instance_id, "sk": sk}, ConsistentRead=True).get("Item")
        return _from_dynamo(raw) if raw else None

    def update_attempt(
        self,
        instance_id: str,
        sk: str,
        fields: Mapping[str, Any],
        only_if_status_in: Iterable[Status] | None = None,
        only_if_unchanged: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Set fields on an existing attempt; None when a condition does not hold: `only_if_status_in`,
        or `only_if_unchanged` (each field still has the value read, None = still absent).
        Writing a final status takes the attempt out of the open-attempts index."""
        tail = (
            f" REMOVE {OPEN_MARK}, {RECONCILE_AT}" if "status" in fields and Status(fields["status"]).terminal else ""
        )
        condition = Attr("pk").exists()
        if only_if_status_in is not None:
            condition &= Attr("status").is_in([s.value for s in only_if_status_in])
        for name, value in (only_if_unchanged or {}).items():
            condition &= Attr(name).not_exists() if value is None else Attr(name).eq(_to_dynamo(value))
        return self._set_if({"pk": instance_id, "sk": sk}, fields, condition, tail)

    def _set_if(
        self, key: Mapping[str, str], fields: Mapping[str, Any], condition: Any, tail: str = ""
    ) -> dict[str, Any] | None:
        """SET `fields` (then `tail`) on the item `key` when `condition` holds: the item as written,
        or None when the condition did not hold (another writer moved it first)."""
        names = {f"#upd{i}": name for i, name in enumerate(fields)}
        values = {f":upd{i}": _to_dynamo(value) for i, value in enumerate(fields.values())}
        try:
            raw = self._table.update_item(
                Key=dict(key),
                UpdateExpression="SET " + ", ".join(f"#upd{i} = :upd{i}" for i in range(len(fields))) + tail,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ConditionExpression=condition,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _from_dynamo(raw["Attributes"])

    def latest(self, instance_id: str) -> dict[str, Any] | None:
        items = self._table.query(
            KeyConditionExpression=Key("pk").eq(instance_id) & Key("sk").begins_with(ATTEMPT_PREFIX),
            ScanIndexForward=False,
            Limit=1,
        )["Items"]
        return _from_dynamo(items[0]) if items else None

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        """Every attempt of an instance, newest first, with only what a sweep decides on."""
        return self._query_all(
            KeyConditionExpression=Key("pk").eq(instance_id) & Key("sk").begins_with(ATTEMPT_PREFIX),
            ProjectionExpression="sk, #s, fingerprint, #t, trigger_key, updated_at, node_kind",
            ExpressionAttributeNames={"#s": "status", "#t": "trigger"},
            ScanIndexForward=False,
        )

    def attempts(self, instance_id: str) -> list[dict[str, Any]]:
        """Every attempt of an instance, newest first, whole (the status command's node history)."""
        return self._query_all(
            KeyConditionExpression=Key("pk").eq(instance_id) & Key("sk").begins_with(ATTEMPT_PREFIX),
            ScanIndexForward=False,
        )

    def _query_all(self, on_page: Callable[[int], None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._table.query(**kwargs)
            items += [_from_dynamo(i) for i in page["Items"]]
            if on_page is not None:
                on_page(len(items))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def find_by_command(self, instance_id: str, command_id: str) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(instance_id) & Key("sk").begins_with(ATTEMPT_PREFIX),
            "FilterExpression": Attr("command_id").eq(command_id),
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            if page["Items"]:
                return _from_dynamo(page["Items"][0])
            if "LastEvaluatedKey" not in page:
                return None
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def overdue(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Open attempts whose result is overdue at `now` (reconcile_at <= now), oldest first, at
        most `limit`: a query of the sparse open-attempts index (eventually consistent: every
        write the reconciler makes is conditional on the attempt still being open)."""
        kwargs: dict[str, Any] = {
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": Key(OPEN_MARK).eq(OPEN) & Key(RECONCILE_AT).lte(Decimal(str(now))),
        }
        items: list[dict[str, Any]] = []
        while len(items) < limit:
            page = self._table.query(**kwargs, Limit=min(1000, limit - len(items)))
            items += [_from_dynamo(i) for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items

    def cluster_attempts(
        self, cluster: ClusterRef, since: str, until: str, on_page: Callable[[int], None] | None = None
    ) -> list[dict[str, Any]]:
        """The cluster's attempts created in [since, until], oldest first: a query of the by-cluster
        index, page by page (`on_page` is told how many items were read so far)."""
        return self._query_all(
            on_page,
            IndexName=CLUSTER_INDEX,
            KeyConditionExpression=Key("cluster").eq(cluster.key) & Key("created_at").between(since, until),
        )

    # ------------------------------------------------------------ in-flight leases (safety.py)

    def leases(self, cluster: ClusterRef) -> tuple[dict[str, float], int]:
        """The cluster's in-flight leases (instance id -> expiry) and the item's version."""
        item = self._table.get_item(Key={"pk": CLUSTER_PK + cluster.key, "sk": IN_FLIGHT}, ConsistentRead=True)
        raw = _from_dynamo(item.get("Item") or {})
        return raw.get("leases", {}), int(raw.get("version", 0))

    def take_leases(
        self, cluster: ClusterRef, wanted: Sequence[str], limit: int, now: float, until: float
    ) -> list[str]:
        """Lease slots of the cluster's in-flight limit to `wanted` nodes, as many as there is room
        for; returns the nodes that may be sent (those holding a live lease already included).

        Read, decide (safety.grant_leases), write back only if nobody wrote in between (version):
        two concurrent dispatches cannot both take the last slot. Expired leases are dropped on
        the way. After LEASE_WRITE_ATTEMPTS lost races, only the nodes already leased are sent."""
        for _ in range(LEASE_WRITE_ATTEMPTS):
            leases, version = self.leases(cluster)
            live = live_leases(leases, now)
            granted, new = grant_leases(wanted, live, limit)
            if not new and len(live) == len(leases):
                return granted
            kept = live | {node: until for node in new}
            try:
                self._table.update_item(
                    Key={"pk": CLUSTER_PK + cluster.key, "sk": IN_FLIGHT},
                    UpdateExpression="SET leases = :leases, version = :next, cluster_name = :c",
                    ConditionExpression=Attr("version").not_exists() if version == 0 else Attr("version").eq(version),
                    ExpressionAttributeValues={
                        ":leases": _to_dynamo(kept),
                        ":next": version + 1,
                        ":c": cluster.name,
                    },
                )
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                continue  # another dispatch wrote first: read again
            return granted
        return [node for node in wanted if node in live]

    def holds(self, instance_id: str, sk: str) -> bool:
        """Whether attempt `sk` holds the node's in-flight claim (its HEAD item names it)."""
        raw = self._table.get_item(
            Key={"pk": instance_id, "sk": HEAD}, ConsistentRead=True, ProjectionExpression="active_attempt"
        ).get("Item")
        return bool(raw) and raw.get("active_attempt") == sk

    def end_lease(self, cluster: ClusterRef, instance_id: str) -> None:
        """The node's remediation is over: free its slot (a no-op if it holds none)."""
        try:
            self._table.update_item(
                Key={"pk": CLUSTER_PK + cluster.key, "sk": IN_FLIGHT},
                # a new version: a dispatch that read the lease before cannot write it back
                UpdateExpression="REMOVE leases.#node ADD version :one",
                ConditionExpression="attribute_exists(leases.#node)",
                ExpressionAttributeNames={"#node": instance_id},
                ExpressionAttributeValues={":one": 1},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    # ------------------------------------------------------------ circuit breaker (safety.py)

    def breaker(self, cluster: ClusterRef) -> dict[str, Any] | None:
        raw = self._table.get_item(Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER}, ConsistentRead=True).get("Item")
        return _from_dynamo(raw) if raw else None

    def breaker_failure(self, cluster: ClusterRef, now: float, threshold: int, open_seconds: int) -> tuple[int, bool]:
        """Count one more consecutive failure (atomic ADD); open the breaker when it reaches
        `threshold` and is not open yet (conditional, so concurrent results open it once).
        Returns (consecutive failures, opened by this call)."""
        raw = self._table.update_item(
            Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER},
            UpdateExpression="ADD failures :one SET cluster_name = :c",
            ExpressionAttributeValues={":one": 1, ":c": cluster.name},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        failures = int(raw["failures"])
        if failures < threshold:
            return failures, False
        try:
            self._table.update_item(
                Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER},
                UpdateExpression="SET open_until = :until, opened_at = :now",
                ConditionExpression=Attr("open_until").not_exists() | Attr("open_until").lte(Decimal(str(now))),
                ExpressionAttributeValues={":until": Decimal(str(now + open_seconds)), ":now": Decimal(str(now))},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return failures, False
            raise
        return failures, True

    def record_node_count(self, cluster: ClusterRef, running_nodes: int, now: float) -> None:
        """Keep the cluster's running-node count on its item (the percent in-flight limit reads it)."""
        self._table.update_item(
            Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER},
            UpdateExpression="SET running_nodes = :n, nodes_counted_at = :now, cluster_name = :c",
            ExpressionAttributeValues={":n": running_nodes, ":now": Decimal(str(now)), ":c": cluster.name},
        )

    def breaker_success(self, cluster: ClusterRef) -> None:
        """A success closes the breaker and resets the consecutive-failure count."""
        self._table.update_item(
            Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER},
            UpdateExpression="SET failures = :zero, open_until = :zero, cluster_name = :c",
            ExpressionAttributeValues={":zero": 0, ":c": cluster.name},
        )

    def breaker_reset(self, cluster: ClusterRef, now: float, reason: str) -> dict[str, Any]:
        raw = self._table.update_item(
            Key={"pk": CLUSTER_PK + cluster.key, "sk": BREAKER},
            UpdateExpression="SET failures = :zero, open_until = :zero, reset_at = :now, reset_reason = :r, "
            "cluster_name = :c",
            ExpressionAttributeValues={":zero": 0, ":now": Decimal(str(now)), ":r": reason, ":c": cluster.name},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return _from_dynamo(raw)

    # ------------------------------------------------------------ rollouts (rollouts.py)

    def rollouts(self, cluster: ClusterRef) -> list[dict[str, Any]]:
        """Every rollout item of the cluster (one per bundle fingerprint rolled out)."""
        return self._query_all(
            KeyConditionExpression=Key("pk").eq(CLUSTER_PK + cluster.key) & Key("sk").begins_with(ROLLOUT_PREFIX),
            ConsistentRead=True,
        )

    def rollout(self, cluster: ClusterRef, fingerprint: str) -> dict[str, Any] | None:
        key = {"pk": CLUSTER_PK + cluster.key, "sk": ROLLOUT_PREFIX + fingerprint}
        raw = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return _from_dynamo(raw) if raw else None

    def start_rollout(self, cluster: ClusterRef, item: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Create the rollout item unless it exists (conditional put); (created, the item)."""
        full = {**item, **_cluster_fields(cluster)}
        full |= {"pk": CLUSTER_PK + cluster.key, "sk": ROLLOUT_PREFIX + item["fingerprint"]}
        try:
            self._table.put_item(Item=_to_dynamo(full), ConditionExpression=Attr("pk").not_exists())
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.rollout(cluster, item["fingerprint"])
            if existing is None:
                raise RecordConflict(f"rollout of {item['fingerprint']} in {cluster.key} vanished") from exc
            return False, existing
        return True, full

    def update_rollout(
        self, cluster: ClusterRef, fingerprint: str, fields: Mapping[str, Any], only_if_status_in: Iterable[str]
    ) -> dict[str, Any] | None:
        """Set fields on a rollout item while its status is one of `only_if_status_in` (else None):
        of concurrent writers (status events, sweep passes) one moves it."""
        condition = Attr("pk").exists() & Attr("rollout_status").is_in(list(only_if_status_in))
        return self._set_if({"pk": CLUSTER_PK + cluster.key, "sk": ROLLOUT_PREFIX + fingerprint}, fields, condition)

    def claim_next_pass(self, cluster: ClusterRef, fingerprint: str, now: float, at: float) -> bool:
        """Note that the rollout's next sweep pass is queued for `at`, unless one is already queued
        for a time between now and `at` (then False: that pass comes first, queue nothing)."""
        try:
            self._table.update_item(
                Key={"pk": CLUSTER_PK + cluster.key, "sk": ROLLOUT_PREFIX + fingerprint},
                UpdateExpression="SET next_pass_at = :at",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(next_pass_at) "
                "OR next_pass_at <= :now OR next_pass_at > :at)",
                ExpressionAttributeValues={":at": Decimal(str(at)), ":now": Decimal(str(now))},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def good_bundle(self, cluster: ClusterRef) -> dict[str, Any] | None:
        raw = self._table.get_item(Key={"pk": CLUSTER_PK + cluster.key, "sk": GOOD_BUNDLE}, ConsistentRead=True).get(
            "Item"
        )
        return _from_dynamo(raw) if raw else None

    def set_good_bundle(self, cluster: ClusterRef, item: Mapping[str, Any]) -> None:
        item = {**item, **_cluster_fields(cluster), "pk": CLUSTER_PK + cluster.key, "sk": GOOD_BUNDLE}
        self._table.put_item(Item=_to_dynamo(item))

    # ------------------------------------------------------------ in-flight claim

    def claim(
        self, instance_id: str, sk: str, now: float, hold_seconds: int, finished_before: float | None = None
    ) -> Claim:
        """Make `sk` the instance's in-flight attempt unless another live attempt holds it, and,
        with `finished_before`, unless the node's last result came after it (its cooldown)."""
        condition = (
            Attr("active_attempt").not_exists()
            | Attr("active_attempt").eq(sk)
            | Attr("active_until").lt(Decimal(str(now)))
        )
        if finished_before is not None:
            condition &= Attr("last_finished_at").not_exists() | Attr("last_finished_at").lte(
                Decimal(str(finished_before))
            )
        try:
            self._table.update_item(
                Key={"pk": instance_id, "sk": HEAD},
                UpdateExpression="SET active_attempt = :me, active_until = :until",
                ConditionExpression=condition,
                ExpressionAttributeValues={":me": sk, ":until": Decimal(str(now + hold_seconds))},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            head = _from_dynamo(
                self._table.get_item(Key={"pk": instance_id, "sk": HEAD}, ConsistentRead=True).get("Item", {})
            )
            holder = head.get("active_attempt")
            held = holder is not None and holder != sk and float(head.get("active_until", 0)) >= now
            return Claim(False, holder, in_flight=held, last_finished_at=head.get("last_finished_at"))
        return Claim(won=True, holder=sk)

    def release(self, instance_id: str, sk: str, finished_at: float | None = None) -> bool:
        """Clear the in-flight claim if `sk` still holds it; with `finished_at`, also note when
        the node's last result came (the start of its cooldown), whoever holds the claim."""
        key = {"pk": instance_id, "sk": HEAD}
        update, values = "REMOVE active_attempt, active_until", {}
        if finished_at is not None:
            update, values = "SET last_finished_at = :t " + update, {":t": Decimal(str(finished_at))}
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=update,
                ConditionExpression=Attr("active_attempt").eq(sk),
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            if finished_at is not None:
                self._table.update_item(
                    Key=key, UpdateExpression="SET last_finished_at = :t", ExpressionAttributeValues=values
                )
            return False
        return True
