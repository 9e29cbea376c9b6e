//! `/metrics`: the data plane's view rendered as Prometheus text through `prometheus-client` (a registry built per
//! scrape from plain numbers; the data plane keeps no shared metric objects, so it never contends with a scrape).
//! Names follow Prometheus practice: `vigil_` prefix, `_total` counters, base units (seconds, bytes).

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::FleetView;
use crate::events::Event;
use crate::metrics::Buckets;
use vigil_core::VoteResult;

type Labels = Vec<(String, String)>;

/// A histogram whose buckets were counted elsewhere.
#[derive(Debug)]
struct ConstHistogram(Buckets);

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // per-bucket counts: the encoder accumulates them
        let buckets: Vec<(f64, u64)> = self
            .0
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY), *c))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(v: u64) -> ConstCounter {
    ConstCounter::new(v)
}

fn family<'a>(name: &str, values: impl IntoIterator<Item = (&'a str, u64)>) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    for (label, v) in values {
        f.get_or_create(&vec![(name.to_string(), label.to_string())]).inc_by(v);
    }
    f
}

/// Every known label with its count (0 when none yet), then any other label the map holds: a series exists from
/// the start, so `increase()` and `rate()` see its first event (an absent series has no "before").
fn every<'a>(
    known: impl IntoIterator<Item = &'a str>,
    counts: &'a BTreeMap<&'static str, u64>,
) -> impl Iterator<Item = (&'a str, u64)> {
    let known: Vec<&'a str> = known.into_iter().collect();
    let extra = counts.iter().filter(|(k, _)| !known.contains(k)).map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
    known.into_iter().map(|k| (k, counts.get(k).copied().unwrap_or(0))).chain(extra)
}

/// The upstream side: the spool and each sink's counters.
#[derive(Default)]
pub struct UpstreamView {
    /// Records waiting in the spool, and dropped over its life.
    pub spool: Option<(u64, u64)>,
    /// Spool records skipped because they did not parse.
    pub spool_unreadable: u64,
    /// Failed spool writes and reopens; records lost because the spool failed longer than memory could hold.
    pub spool_errors: (u64, u64),
    /// Per sink: its name and counters.
    pub sinks: Vec<SinkView>,
    /// Libvirt corrective actions by result (`ok`, `failed`, `timed_out`, `held`).
    pub action_results: Vec<(&'static str, u64)>,
}

/// One sink's counters, read once.
#[derive(Clone, Debug, Default)]
pub struct SinkView {
    /// Its name (cursor, label).
    pub name: String,
    /// Records passed (delivered, or nothing to send).
    pub delivered: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Records refused for good.
    pub refused: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// Records the receiver had already or would not act on.
    pub conflicts: u64,
}

impl UpstreamView {
    /// Reads the counters.
    pub fn of(shared: &super::Shared) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        UpstreamView {
            action_results: shared
                .action_results
                .lock()
                .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
                .unwrap_or_default(),
            spool: shared.spool.as_ref().and_then(|s| s.stats().ok()),
            spool_unreadable: shared.spool.as_ref().map_or(0, |s| s.unreadable()),
            spool_errors: shared
                .spool
                .as_ref()
                .map_or((0, 0), |s| (s.health.errors.load(Relaxed), s.health.lost.load(Relaxed))),
            sinks: shared
                .sinks
                .iter()
                .map(|(n, s)| SinkView {
                    name: n.clone(),
                    delivered: s.delivered.load(Relaxed),
                    retries: s.retries.load(Relaxed),
                    refused: s.refused.load(Relaxed),
                    dead_letters: s.dead_letters.load(Relaxed),
                    conflicts: s.conflicts.load(Relaxed),
                })
                .collect(),
        }
    }
}

/// The OpenMetrics text of `/metrics` (what `prometheus-client` writes).
pub fn openmetrics(
    v: &FleetView,
    events_by_kind: &BTreeMap<&'static str, u64>,
    commands_refused: u64,
    up: &UpstreamView,
) -> String {
    let mut r = Registry::with_prefix("vigil");
    let states = Family::<Labels, Gauge>::default();
    for &(s, n) in &v.by_state {
        states.get_or_create(&vec![("state".into(), s.into())]).set(n as i64);
    }
    r.register("guests", "Guests by state", states);
    r.register(
        "guests_in_maintenance",
        "Guests with an open maintenance window",
        ConstGauge::new(v.in_maintenance as i64),
    );
    r.register("reporting", "1 when faults are reported for the whole host", ConstGauge::new(i64::from(v.reporting)));
    let t = &v.totals;
    r.register("messages_sent", "Messages sent to guests (challenges, acks, notices, nacks)", counter(t.messages_out));
    r.register("heartbeats", "Valid heartbeat answers", counter(t.heartbeats));
    r.register("missed_intervals", "Intervals that ended without a valid answer", counter(t.misses));
    r.register(
        "host_late_intervals",
        "Unanswered intervals not counted as misses: the challenge left less than half an interval before the verdict (vigild was behind)",
        counter(t.host_late),
    );
    r.register("heartbeat_losses", "Heartbeat losses declared", counter(t.losses));
    r.register("registrations", "Guest registrations (init)", counter(t.registrations));
    r.register_with_unit("received", "Bytes read from guests", Unit::Bytes, counter(t.bytes_in));
    let c = &v.counters;
    r.register("unhealthy_reports", "Unhealthy reports", counter(c.unhealthy_reports));
    r.register("faults_withheld", "Faults not reported (maintenance, reporting off)", counter(c.withheld_faults));
    r.register(
        "agent_probes",
        "Probes of guests watched through the QEMU guest agent, by result",
        family("result", [("answered", c.agent_answers), ("missed", c.agent_misses)]),
    );
    r.register(
        "protocol_errors",
        "Protocol errors by kind (rate_limited: episodes over the byte budget)",
        family("kind", c.protocol_errors.iter().map(|(k, v)| (*k, *v))),
    );
    r.register(
        "votes",
        "Votes and notices by result",
        family("result", every(VoteResult::ALL.iter().map(|r| r.as_str()), &c.votes)),
    );
    r.register_with_unit(
        "heartbeat_round_trip",
        "Challenge to answer, for answers to the current challenge",
        Unit::Seconds,
        ConstHistogram(c.rtt.clone()),
    );
    r.register_with_unit(
        "loop_pass",
        "Time of one data-plane loop pass",
        Unit::Seconds,
        ConstHistogram(v.pass.clone()),
    );
    r.register("events_written", "Events numbered by the local writer", counter(v.events_emitted));
    r.register(
        "events_dropped",
        "Events lost (writer queue full, write failed, or control queue full)",
        family("path", [("writer", v.events_dropped), ("control", v.control_dropped)]),
    );
    r.register(
        "events",
        "Events seen by the control plane, by kind",
        family("kind", every(Event::KINDS.iter().copied(), events_by_kind)),
    );
    r.register(
        "action_results",
        "Corrective actions through libvirt, by result (ok, failed, timed_out, held by the second opinion)",
        family(
            "result",
            ["ok", "failed", "timed_out", "held"]
                .into_iter()
                .map(|k| (k, up.action_results.iter().find(|(r, _)| *r == k).map_or(0, |(_, n)| *n))),
        ),
    );
    r.register(
        "admin_commands_refused",
        "Admin commands refused because the loop's queue was full",
        counter(commands_refused),
    );
    if let Some((waiting, dropped)) = up.spool {
        r.register("spool_records", "Events waiting in the spool for some sink", ConstGauge::new(waiting as i64));
        r.register("spool_dropped", "Events dropped from a full spool", counter(dropped));
        r.register(
            "spool_unreadable",
            "Spool records skipped because they did not parse",
            counter(up.spool_unreadable),
        );
    }
    if !up.sinks.is_empty() {
        // even while the spool cannot be read (its gauges above need it)
        r.register(
            "spool_errors",
            "Spool writes or reopens that failed (a full disk, an I/O error)",
            counter(up.spool_errors.0),
        );
        r.register(
            "spool_lost",
            "Events lost because the spool failed longer than the in-memory bound could hold",
            counter(up.spool_errors.1),
        );
    }
    if !up.sinks.is_empty() {
        let each = |f: fn(&SinkView) -> u64| {
            let fam = Family::<Labels, Counter>::default();
            for s in &up.sinks {
                fam.get_or_create(&vec![("sink".to_string(), s.name.clone())]).inc_by(f(s));
            }
            fam
        };
        r.register("sink_delivered", "Events delivered upstream, by sink", each(|s| s.delivered));
        r.register("sink_retries", "Failed deliveries retried, by sink", each(|s| s.retries));
        r.register("sink_refused", "Events a sink refused for good (HTTP 400, 413, 422), by sink", each(|s| s.refused));
        r.register(
            "sink_dead_letters",
            "Events a sink gave up on after max_record_age of retries (kept in the spool), by sink",
            each(|s| s.dead_letters),
        );
        r.register(
            "sink_conflicts",
            "Events a receiver had already or would not act on (Masakari's 409), by sink",
            each(|s| s.conflicts),
        );
    }
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

/// The Prometheus text format (0.0.4) of the same metrics, for scrapers that do not ask for OpenMetrics and for
/// `promtool check metrics`: a counter family is named with its `_total`, and the OpenMetrics-only lines (`# UNIT`,
/// `# EOF`) are left out.
pub fn metrics(
    v: &FleetView,
    events_by_kind: &BTreeMap<&'static str, u64>,
    commands_refused: u64,
    up: &UpstreamView,
) -> String {
    to_classic(&openmetrics(v, events_by_kind, commands_refused, up))
}

fn to_classic(om: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Text made safe for HTML (element content and quoted attributes).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Guests listed on the status page at most (those not heartbeating first).
pub const STATUS_PAGE_GUESTS: usize = 500;

/// The status page: guests by state with their open fault, sinks with their counters and the spool's backlog, the
/// latest events. Server-side HTML with inline style, no script and no external asset; every text is escaped
/// (guest ids and event details carry guest-influenced text).
pub fn status_html(v: &FleetView, up: &UpstreamView, recent: &[super::Recent], host: &str) -> String {
    use std::fmt::Write as _;
    let e = html_escape;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>vigild on {0}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;\
         margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         th{{background:#f0f0f0}}.bad{{color:#b00;font-weight:bold}}.ok{{color:#070}}code{{font-size:12px}}\
         .ev td:nth-child(-n+2){{white-space:nowrap}}.ev td:last-child code{{overflow-wrap:anywhere}}</style>\
         </head><body><h1>vigild on {0}</h1>",
        e(host)
    );
    let total: u64 = v.by_state.iter().map(|(_, n)| n).sum();
    let _ = write!(h, "<h2>Guests: {total}</h2><table><tr><th>state</th><th>guests</th></tr>");
    for (state, n) in &v.by_state {
        let class = if matches!(*state, "lost" | "crashed") && *n > 0 { " class=\"bad\"" } else { "" };
        let _ = write!(h, "<tr><td>{}</td><td{class}>{n}</td></tr>", e(state));
    }
    h.push_str("</table>");
    let mut guests: Vec<&crate::node::status::GuestStatus> = v.guests.iter().collect();
    guests.sort_by_key(|g| (g.state == "heartbeating", g.fault.is_none(), g.id.clone()));
    h.push_str(
        "<table><tr><th>guest</th><th>state</th><th>open fault</th><th>heartbeats</th><th>missed</th>\
         <th>last round trip</th><th>maintenance</th></tr>",
    );
    for g in guests.iter().take(STATUS_PAGE_GUESTS) {
        let class = if g.fault.is_some() { "bad" } else { "ok" };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td>\
             <td>{}</td></tr>",
            e(&g.id),
            e(&g.state),
            e(g.fault.as_deref().unwrap_or("")),
            g.heartbeats,
            g.misses,
            g.last_rtt_ms,
            e(g.maintenance_reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
    if guests.len() > STATUS_PAGE_GUESTS {
        let _ = write!(
            h,
            "<p>{} more guests: <code>vigild status --json</code> lists them all.</p>",
            guests.len() - STATUS_PAGE_GUESTS
        );
    }
    h.push_str("<h2>Upstream</h2>");
    match up.spool {
        Some((waiting, dropped)) => {
            let _ = write!(h, "<p>Spool: {waiting} events waiting, {dropped} dropped.</p>");
        }
        None => h.push_str("<p>No sink configured: events stay in the local event log.</p>"),
    }
    if !up.sinks.is_empty() {
        h.push_str(
            "<table><tr><th>sink</th><th>delivered</th><th>retries</th><th>refused</th><th>dead letters</th></tr>",
        );
        for s in &up.sinks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&s.name),
                s.delivered,
                s.retries,
                s.refused,
                s.dead_letters
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Latest events</h2><table class=\"ev\"><tr><th>time</th><th>guest</th><th>kind</th><th>detail</th></tr>"
    );
    for r in recent {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            e(&r.time),
            e(&r.guest),
            e(r.kind),
            e(&r.detail)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total_and_drops_openmetrics_lines() {
        let om = "# HELP x_hits Hits.\n# TYPE x_hits counter\nx_hits_total 3\n# HELP x_rtt_seconds R.\n# TYPE x_rtt_seconds histogram\n# UNIT x_rtt_seconds seconds\nx_rtt_seconds_count 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP x_hits_total Hits.\n# TYPE x_hits_total counter\nx_hits_total 3\n# HELP x_rtt_seconds R.\n# TYPE x_rtt_seconds histogram\nx_rtt_seconds_count 1\n"
        );
    }

    #[test]
    fn every_known_label_has_a_series_from_the_start_and_none_is_lost() {
        let counts = BTreeMap::from([("recovered", 2), ("from_a_newer_kind", 1)]);
        let got: Vec<(&str, u64)> = every(["connected", "recovered"], &counts).collect();
        assert_eq!(got, [("connected", 0), ("recovered", 2), ("from_a_newer_kind", 1)]);
        // a vigild that has seen nothing yet
        let view = FleetView {
            guests: Vec::new(),
            by_state: Vec::new(),
            in_maintenance: 0,
            counters: Default::default(),
            totals: Default::default(),
            pass: Buckets::new(&[0.001]),
            events_emitted: 0,
            events_dropped: 0,
            control_dropped: 0,
            reporting: true,
        };
        let text = openmetrics(&view, &BTreeMap::new(), 0, &UpstreamView::default());
        assert!(text.contains("vigil_events_total{kind=\"action_suppressed\"} 0"), "{text}");
        assert!(text.contains("vigil_votes_total{result=\"timeout\"} 0"), "{text}");
    }

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(html_escape("<b a='1'>&\"\u{7}"), "&lt;b a=&#39;1&#39;&gt;&amp;&quot;\u{fffd}");
    }
}
