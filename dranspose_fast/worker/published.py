"""What a worker publishes in its config: its counters, brought up to date from the data
thread's own (read by the controller, ``/api/v1/status`` and ``/metrics``)."""

from __future__ import annotations

from dranspose_fast.runtime.metrics import DutyCycle
from dranspose_fast.worker.parts import ScanState, ServiceCounters, WorkerServiceState
from dranspose_fast.worker.peers import CreditSender, Peers

__all__ = ["fill_state"]


def fill_state(st: WorkerServiceState, c: ServiceCounters, scan: ScanState | None,
               peers: Peers, credits: CreditSender, duty: DutyCycle) -> None:
    """Copy the counters into ``st`` (the caller holds the state lock)."""
    st.processed_events = c.processed
    st.results_sent = c.results
    st.user_errors = c.errors_done + (scan.host.counters.errors if scan else 0)
    st.malformed_batches = c.malformed
    st.dropped_old_scan, st.batches_before_join = c.old_scan, c.before_join
    st.duplicate_streams = c.duplicates_done + (scan.assembler.duplicates if scan else 0)
    st.bad_assignments = c.bad_assignments
    st.bad_configs = c.bad_configs
    st.ingester_reconnects = peers.reconnects
    st.results_queued = len(peers.outbox)
    st.event_batches = c.batches
    st.result_messages = c.result_messages
    st.credit_failures = credits.failures
    st.waiting_events = scan.assembler.waiting if scan else 0
    st.bytes_received, st.credits_granted = c.bytes_received, c.credits_granted
    st.credits_ungranted = scan.ungranted if scan else 0
    st.dropped_lost_upstream = sum(scan.losses.events.values()) if scan else 0
    st.busy_seconds, st.duty_cycle = duty.busy_seconds(), duty.ratio()
