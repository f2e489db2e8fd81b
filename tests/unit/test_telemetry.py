"""The metric tally: counts summed, durations kept (at most 100 per EMF document), drained once."""

from eks_ca_remediator import telemetry


class Sink:
    def __init__(self) -> None:
        self.added: list[tuple[str, str, float]] = []

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.added.append((name, unit, value))


def test_publish_adds_what_the_handler_tallied_and_drops_leftovers():
    telemetry.count(telemetry.REMEDIATIONS_SENT, 7)  # outside any handler: not published
    sink = Sink()

    @telemetry.publish(sink)
    def handler() -> str:
        telemetry.count(telemetry.REMEDIATIONS_SENT, 2)
        telemetry.count(telemetry.REMEDIATIONS_SENT)
        telemetry.status_reached("SUCCEEDED")
        telemetry.status_reached("PENDING_AGENT")  # not a final status: no metric
        telemetry.seconds(telemetry.AGENT_WAIT_SECONDS, 35.0)
        telemetry.seconds(telemetry.AGENT_WAIT_SECONDS, -1.0)  # clock skew never goes negative
        return "ok"

    assert handler() == "ok"
    assert sorted(sink.added) == [
        ("AgentWaitSeconds", "Seconds", 0.0),
        ("AgentWaitSeconds", "Seconds", 35.0),
        ("RemediationsSent", "Count", 3),
        ("RemediationsSucceeded", "Count", 1),
    ]
    assert telemetry.drain() == []


def test_durations_are_capped_at_the_emf_limit():
    for i in range(150):
        telemetry.seconds(telemetry.TIME_TO_SUCCEEDED_SECONDS, i)
    assert len(telemetry.drain()) == telemetry.MAX_VALUES


def test_elapsed_reads_record_timestamps():
    assert telemetry.elapsed("2026-11-26T10:00:00.000000Z", "2026-11-26T10:01:30.500000Z") == 90.5
    assert telemetry.elapsed(None, "2026-11-26T10:00:00Z") is None
