//! In-memory demo: one host Monitor watching three guest Agents on a virtual clock; one turns unhealthy, one
//! hangs. Prints the events the host sees. (The host daemon, vigild, runs the same Monitor over real sockets.)
#![allow(clippy::unwrap_used)]

use vigil_core::*;
use vigil_tests::Pair;

fn main() {
    let guests = ["healthy-vm", "sick-vm", "hung-vm"];
    let mut pairs: Vec<Pair> = guests
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let agent = AgentConfig { name: bounded(name), ..AgentConfig::default() };
            Pair::new(MonitorConfig::default(), agent, 100 + i as u64)
        })
        .collect();
    for p in pairs.iter_mut() {
        p.run_until(Instant::from_secs(10));
    }
    pairs[1].agent.set_health(Health::Unhealthy, CorrectiveAction::Reboot, "worker pool exhausted");
    pairs[2].to_host().mute = true;
    for p in pairs.iter_mut() {
        p.run_until(Instant::from_secs(30));
    }
    for (name, p) in guests.iter().zip(&pairs) {
        for (t, e) in &p.host_events {
            println!("{:>7}ms  {name:<11} {e:?}", t.as_millis());
        }
        let s = p.monitor.stats();
        println!("{:>9}  {name:<11} heartbeats={} misses={} fault={:?}", "", s.heartbeats, s.misses, p.monitor.fault());
    }
}
