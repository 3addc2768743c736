"""What the agent publishes, as data: a host's status turned into metric families and EMF records.

No HTTP and no UI here: ``nitrodeck serve`` (console/agent/) builds an :class:`AgentSnapshot` from
a :class:`core.ops.lifecycle.Status` and asks this module for the Prometheus families
(:class:`SnapshotCollector`, rendered by prometheus-client) or for CloudWatch Embedded Metric Format
records (:func:`emf_records`). Both views come from the same snapshot, so a Grafana panel and a
CloudWatch alarm never disagree about the same host.

Names follow Prometheus' conventions: base units (bytes, seconds), ``_total`` for counters, one
``_info`` family carrying the descriptive labels so the numeric families keep few labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.ops.lifecycle import Status

#: label names of the per-enclave numeric families (the ``_info`` family adds the rest)
ENCLAVE_LABELS = ["enclave_id", "name"]
INFO_LABELS = ["enclave_id", "name", "image", "pcr0", "debug"]
EMF_NAMESPACE = "Nitrodeck"


@dataclass
class AgentSnapshot:
    """One refresh of the host, plus the agent's own counters; immutable once published."""

    status: Status | None
    #: enclave ID -> "match" | "mismatch" | "unpinned" | "debug" (core.ops.expected.Verdict)
    verdicts: dict[str, str] = field(default_factory=dict)
    #: enclave ID -> seconds since it started (None where nobody knows)
    uptimes: dict[str, float] = field(default_factory=dict)
    #: enclave name (or ID when it had none) -> how many ``exited`` events the journal holds
    exits: dict[str, int] = field(default_factory=dict)
    #: enclave name -> did the last periodic test-sign pass; None when the probe is off
    testsign: dict[str, bool] | None = None
    #: time.time() of this refresh
    taken: float = field(default_factory=time.time)
    #: why the last refresh failed (the previous good status is kept in ``status``)
    error: str | None = None
    #: enclave ID -> core.ops.expected.Judgement (the verdict's pin, how it was found): for /status
    judgements: dict[str, Any] = field(default_factory=dict)
    #: the journal's recent exits as event JSON, newest first, each with its verdict: for /status
    exited: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AgentCounters:
    """Monotonic counters the agent keeps across snapshots."""

    scrape_errors: int = 0
    unauthorized: int = 0


def _size_label(size_kb: int) -> str:
    """The page size as people write it: 2M, 1G (the kernel's hugepages-2048kB)."""
    if size_kb % (1024 * 1024) == 0:
        return f"{size_kb // (1024 * 1024)}G"
    return f"{size_kb // 1024}M" if size_kb % 1024 == 0 else f"{size_kb}K"


def _pcr_value(verdict: str | None) -> int | None:
    """1 match, 0 mismatch; None (no sample) when nothing is pinned or PCRs are zeros (debug mode)."""
    return {"match": 1, "mismatch": 0}.get(verdict or "")


def families(snap: AgentSnapshot, counters: AgentCounters) -> list[Metric]:
    """The Prometheus metric families of one snapshot (what /metrics prints)."""
    info = GaugeMetricFamily("nitrodeck_enclave_info", "Descriptive labels of each running enclave (always 1)",
                             labels=INFO_LABELS)
    running = GaugeMetricFamily("nitrodeck_enclave_running", "1 when describe-enclaves reports State RUNNING",
                                labels=ENCLAVE_LABELS)
    cpus = GaugeMetricFamily("nitrodeck_enclave_cpus", "vCPUs given to the enclave", labels=ENCLAVE_LABELS)
    memory = GaugeMetricFamily("nitrodeck_enclave_memory_bytes", "Memory given to the enclave",
                               labels=ENCLAVE_LABELS)
    uptime = GaugeMetricFamily("nitrodeck_enclave_uptime_seconds", "Seconds since the enclave started",
                               labels=ENCLAVE_LABELS)
    pcr = GaugeMetricFamily("nitrodeck_enclave_pcr_match",
                            "1 when PCR0/1/2 match the pinned values, 0 on a mismatch (absent when unpinned)",
                            labels=ENCLAVE_LABELS)
    exits = CounterMetricFamily("nitrodeck_enclave_exits", "Enclave exits nobody asked for (lifecycle journal)",
                                labels=["name"])
    pool = GaugeMetricFamily("nitrodeck_pool_cpus", "CPUs of the enclave pool, free or held by enclaves",
                             labels=["state"])
    pages = GaugeMetricFamily("nitrodeck_hugepages_bytes",
                              "Hugepage memory per page size and NUMA node: total, free, held by enclaves",
                              labels=["size", "node", "state"])
    out: list[Metric] = [info, running, cpus, memory, uptime, pcr, exits, pool, pages]

    st = snap.status
    if st is not None:
        for e in st.enclaves:
            key = [e.enclave_id, e.name or ""]
            pcr0 = e.measurements.pcr0 if e.measurements else ""
            info.add_metric([*key, e.image_name or "", pcr0, "true" if e.debug_mode else "false"], 1)
            running.add_metric(key, 1 if e.state == "RUNNING" else 0)
            cpus.add_metric(key, e.cpu_count)
            memory.add_metric(key, e.memory_mib * 1024 * 1024)
            if e.enclave_id in snap.uptimes:
                uptime.add_metric(key, snap.uptimes[e.enclave_id])
            value = _pcr_value(snap.verdicts.get(e.enclave_id))
            if value is not None:
                pcr.add_metric(key, value)
        held = sum(len(ids) for ids in st.resources.cpus.held.values())
        pool.add_metric(["free"], len(st.resources.cpus.free))
        pool.add_metric(["held"], held)
        for p in st.resources.hugepages:
            labels = [_size_label(p.size_kb), "" if p.node is None else str(p.node)]
            size = p.size_kb * 1024
            pages.add_metric([*labels, "total"], p.total * size)
            pages.add_metric([*labels, "free"], p.free * size)
            pages.add_metric([*labels, "held"], p.held_by_enclaves * size)
    for name, count in sorted(snap.exits.items()):
        exits.add_metric([name], count)

    if snap.testsign is not None:
        probe = GaugeMetricFamily("nitrodeck_testsign_last_ok",
                                  "1 when the last periodic test-sign of the enclave passed every check",
                                  labels=["name"])
        for name, ok in sorted(snap.testsign.items()):
            probe.add_metric([name], 1 if ok else 0)
        out.append(probe)

    errors = CounterMetricFamily("nitrodeck_scrape_errors", "Refreshes of the host state that failed")
    errors.add_metric([], counters.scrape_errors)
    refused = CounterMetricFamily("nitrodeck_agent_unauthorized_requests",
                                  "Requests refused with 401 (no or a wrong bearer token)")
    refused.add_metric([], counters.unauthorized)
    age = GaugeMetricFamily("nitrodeck_snapshot_age_seconds", "Seconds since the served state was taken")
    age.add_metric([], max(0.0, time.time() - snap.taken))
    out += [errors, refused, age]
    return out


class SnapshotCollector(Collector):
    """A prometheus-client collector over whatever snapshot ``current()`` returns at scrape time."""

    def __init__(self, current: Callable[[], tuple[AgentSnapshot, AgentCounters]]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        snap, counters = self._current()
        yield from families(snap, counters)


# --- CloudWatch Embedded Metric Format -------------------------------------------------------------------


def _emf(dimensions: dict[str, str], metrics: dict[str, tuple[float, str]], timestamp_ms: int) -> dict[str, Any]:
    """One EMF document: the ``_aws`` metadata, the dimension values and the metric values at the root."""
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": EMF_NAMESPACE,
                "Dimensions": [sorted(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }],
        },
    }
    record.update(dimensions)
    record.update({name: value for name, (value, _) in metrics.items()})
    return record


def emf_records(snap: AgentSnapshot, counters: AgentCounters) -> list[dict[str, Any]]:
    """The snapshot as EMF documents: one per host, one per enclave (CloudWatch extracts the metrics
    from the log lines the ECS awslogs driver ships, with no API call from the host)."""
    st = snap.status
    if st is None:
        return []
    now_ms = int(snap.taken * 1000)
    instance = st.instance_id or "unknown"
    held = sum(len(ids) for ids in st.resources.cpus.held.values())
    host: dict[str, tuple[float, str]] = {
        "EnclavesRunning": (sum(1 for e in st.enclaves if e.state == "RUNNING"), "Count"),
        "PoolCpusFree": (len(st.resources.cpus.free), "Count"),
        "PoolCpusHeld": (held, "Count"),
        "HugepagesFreeBytes": (sum(p.free * p.size_kb * 1024 for p in st.resources.hugepages), "Bytes"),
        "EnclaveExits": (sum(snap.exits.values()), "Count"),
        "ScrapeErrors": (counters.scrape_errors, "Count"),
    }
    if snap.testsign is not None:
        host["TestSignFailing"] = (sum(1 for ok in snap.testsign.values() if not ok), "Count")
    out = [_emf({"InstanceId": instance}, host, now_ms)]
    for e in st.enclaves:
        metrics: dict[str, tuple[float, str]] = {
            "EnclaveRunning": (1 if e.state == "RUNNING" else 0, "Count"),
            "EnclaveCpus": (e.cpu_count, "Count"),
            "EnclaveMemoryBytes": (e.memory_mib * 1024 * 1024, "Bytes"),
        }
        if e.enclave_id in snap.uptimes:
            metrics["EnclaveUptime"] = (round(snap.uptimes[e.enclave_id], 3), "Seconds")
        value = _pcr_value(snap.verdicts.get(e.enclave_id))
        if value is not None:
            metrics["EnclavePcrMatch"] = (value, "None")
        if snap.testsign is not None and e.label in snap.testsign:
            metrics["TestSignOk"] = (1 if snap.testsign[e.label] else 0, "None")
        out.append(_emf({"InstanceId": instance, "EnclaveName": e.label}, metrics, now_ms))
    return out
