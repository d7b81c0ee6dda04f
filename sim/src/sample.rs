//! Figures sampled while the mesh runs rather than counted: the connection gauge every
//! node exposes in its metrics text (read at the end of the idle window and every few
//! seconds of the workload), and the process CPU over the idle window.

use std::time::Duration;

use tokio::time::Instant;

use crate::{mesh::Mesh, report::ConnectionFigure, resources};

/// The gauge each node exposes: connections established now.
pub const CONNECTIONS_GAUGE: &str = "starling_connections";

/// How long the mesh idles, up and with no tasks, while its CPU is measured.
pub const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Agents above which the workload is sampled less often: each sample encodes every
/// node's whole metrics registry, which must stay a small part of the run's CPU.
const FREQUENT_SAMPLING_MAX_AGENTS: usize = 250;

/// How often every live agent's connections are sampled during the workload: every
/// 2 s, every 5 s above [`FREQUENT_SAMPLING_MAX_AGENTS`] agents.
pub fn sample_interval(agents: usize) -> Duration {
    if agents > FREQUENT_SAMPLING_MAX_AGENTS {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(2)
    }
}

/// The value of the metric named exactly `name` in one node's metrics text (the
/// Prometheus text format), summed over its series; `None` when the text has none.
/// A longer name that starts with `name` (`starling_connections_closed_total`) is a
/// different metric.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// Connection counts of agents, accumulated over samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionSamples {
    /// Sum of every sampled count.
    total: f64,
    /// Counts sampled (agents × samples).
    samples: u64,
    /// Largest count sampled.
    max: u64,
}

impl ConnectionSamples {
    /// Adds one agent's count, read from its metrics text; a text without the gauge
    /// adds nothing.
    pub fn add_text(&mut self, text: &str) {
        if let Some(v) = metric_value(text, CONNECTIONS_GAUGE) {
            let count = v.max(0.0);
            self.total += count;
            self.samples += 1;
            self.max = self.max.max(count.round() as u64);
        }
    }

    /// Adds one sample of every agent whose metrics text is in `texts`.
    pub fn add_texts(&mut self, texts: &[String]) {
        for t in texts {
            self.add_text(t);
        }
    }

    /// Adds everything `other` sampled.
    pub fn merge(&mut self, other: &ConnectionSamples) {
        self.total += other.total;
        self.samples += other.samples;
        self.max = self.max.max(other.max);
    }

    /// The mean over every sampled count and the largest; `None` if none was sampled.
    pub fn figure(&self) -> Option<ConnectionFigure> {
        (self.samples > 0).then(|| ConnectionFigure {
            mean: self.total / self.samples as f64,
            max: self.max,
        })
    }
}

/// What the idle window measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IdleFigures {
    /// Seconds the window lasted.
    pub seconds: f64,
    /// Process CPU per agent per second over the window, ms (`None`: CPU time not
    /// readable).
    pub cpu_ms_per_agent_s: Option<f64>,
    /// Every live agent's connections at the end of the window.
    pub connections: ConnectionSamples,
}

/// Lets the mesh (of `agents` nodes) idle for [`IDLE_WINDOW`] with no workload,
/// measuring the process CPU over it, then samples every live agent's connections.
pub async fn idle_window(mesh: &Mesh, agents: usize) -> IdleFigures {
    let cpu0 = resources::cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu1 = resources::cpu_seconds();
    let seconds = t0.elapsed().as_secs_f64();
    let mut connections = ConnectionSamples::default();
    connections.add_texts(&mesh.live_metrics());
    IdleFigures {
        seconds,
        cpu_ms_per_agent_s: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a).max(0.0) * 1000.0 / agents.max(1) as f64 / seconds),
            _ => None,
        },
        connections,
    }
}

/// Samples every live agent's connections every [`sample_interval`] from the start
/// of the workload.
#[derive(Debug, Clone)]
pub struct ConnectionSampler {
    interval: Duration,
    next: Instant,
    samples: ConnectionSamples,
}

impl ConnectionSampler {
    /// A sampler for a workload on `agents` agents that starts at `start`.
    pub fn new(start: Instant, agents: usize) -> ConnectionSampler {
        let interval = sample_interval(agents);
        ConnectionSampler {
            interval,
            next: start + interval,
            samples: ConnectionSamples::default(),
        }
    }

    /// Samples every live agent of `mesh` if a sample is due.
    pub fn sample_if_due(&mut self, mesh: &Mesh) {
        if Instant::now() >= self.next {
            self.samples.add_texts(&mesh.live_metrics());
            // Late (a busy runtime): the next sample is a whole interval away.
            self.next = (self.next + self.interval).max(Instant::now());
        }
    }

    /// Sleeps until `until`, taking every sample that falls due on the way.
    pub async fn sleep_until(&mut self, until: Instant, mesh: &Mesh) {
        while self.next < until {
            tokio::time::sleep_until(self.next).await;
            self.sample_if_due(mesh);
        }
        tokio::time::sleep_until(until).await;
    }

    /// Everything sampled so far.
    pub fn samples(&self) -> &ConnectionSamples {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_TEXT: &str = "\
# HELP starling_connections Established connections now.
# TYPE starling_connections gauge
starling_connections 7
# HELP starling_connections_closed_idle Connections this node closed because nothing needed them.
# TYPE starling_connections_closed_idle counter
starling_connections_closed_idle_total 40
# EOF
";

    #[test]
    fn the_gauge_is_read_by_its_exact_name() {
        assert_eq!(metric_value(NODE_TEXT, CONNECTIONS_GAUGE), Some(7.0));
        assert_eq!(
            metric_value(NODE_TEXT, "starling_connections_closed_idle_total"),
            Some(40.0)
        );
        assert_eq!(metric_value(NODE_TEXT, "starling_conn"), None);
        let labelled = "m{kind=\"a\"} 2\nm{kind=\"b\"} 3\nm_total 9\n";
        assert_eq!(metric_value(labelled, "m"), Some(5.0));
        assert_eq!(metric_value("# EOF\n", CONNECTIONS_GAUGE), None);
    }

    #[test]
    fn connections_are_averaged_over_agents_and_samples_and_the_max_kept() {
        let text =
            |n: u32| format!("# TYPE starling_connections gauge\nstarling_connections {n}\n");
        let mut idle = ConnectionSamples::default();
        idle.add_texts(&[text(2), text(4)]);
        assert_eq!(idle.figure(), Some(ConnectionFigure { mean: 3.0, max: 4 }));

        let mut run = ConnectionSamples::default();
        // An agent without the gauge is not a sample of zero connections.
        run.add_texts(&[text(9), text(1), "# EOF\n".to_string()]);
        run.merge(&idle);
        assert_eq!(
            run.figure(),
            Some(ConnectionFigure {
                mean: 16.0 / 4.0,
                max: 9
            })
        );
        assert_eq!(ConnectionSamples::default().figure(), None);
    }

    #[test]
    fn big_meshes_are_sampled_less_often() {
        assert_eq!(sample_interval(100), Duration::from_secs(2));
        assert_eq!(sample_interval(1_000), Duration::from_secs(5));
    }
}
