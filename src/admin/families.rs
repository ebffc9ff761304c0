//! The metric families one scrape of `GET /metrics` gathers, as plain data, and their
//! encoding through `prometheus-client` (its [`Collector`] is the hook for figures read
//! at scrape time). Gathering them is [`super::metrics`]'s job.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::store::HistogramSnapshot;

pub(super) type Labels = Vec<(&'static str, String)>;

/// One metric family as gathered: name (without the `switchboard_` prefix and, for a
/// counter, without `_total`, which the encoder adds), help, type and samples (a
/// histogram has one unlabelled [`Histogram`] instead).
#[derive(Debug)]
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    pub(super) samples: Vec<(Labels, u64)>,
    histogram: Option<Histogram>,
}

/// A histogram in the metric's unit: the sum and, per bucket, its upper bound and its
/// observations (not cumulative; the last bound is +Inf).
#[derive(Debug)]
pub(super) struct Histogram {
    sum: f64,
    buckets: Vec<(f64, u64)>,
}

impl Family {
    pub(super) fn sample(&mut self, labels: Labels, value: u64) -> &mut Self {
        self.samples.push((labels, value));
        self
    }

    pub(super) fn value(&mut self, value: u64) -> &mut Self {
        self.sample(Vec::new(), value)
    }
}

/// Everything one scrape gathered, in the order it is written.
#[derive(Debug, Default)]
pub(super) struct Families(Vec<Family>);

impl Families {
    pub(super) fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
    ) -> &mut Family {
        self.0.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
            histogram: None,
        });
        self.0.last_mut().expect("just pushed")
    }

    pub(super) fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Counter)
    }

    pub(super) fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, MetricType::Gauge)
    }

    /// A histogram from the store's snapshot, whose figures are `per_unit` to the
    /// metric's unit (1e6 for microseconds as seconds).
    pub(super) fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        h: &HistogramSnapshot,
        per_unit: f64,
    ) {
        let bounds = h.bounds.iter().map(|&b| b as f64 / per_unit);
        let buckets = bounds
            .chain([f64::INFINITY])
            .zip(h.buckets.iter().copied())
            .collect();
        self.family(name, help, MetricType::Histogram).histogram = Some(Histogram {
            sum: h.sum as f64 / per_unit,
            buckets,
        });
    }
}

impl Families {
    /// The Prometheus text exposition of these families, names prefixed `switchboard_`.
    pub(super) fn into_text(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("switchboard");
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut family = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                let mut metric = family.encode_family(labels)?;
                if f.kind == MetricType::Counter {
                    metric.encode_counter::<NoLabelSet, _, u64>(value, None)?;
                } else {
                    metric.encode_gauge(value)?;
                }
            }
            if let Some(h) = &f.histogram {
                let count = h.buckets.iter().map(|(_, n)| n).sum();
                family
                    .encode_family(&Labels::new())?
                    .encode_histogram::<NoLabelSet>(h.sum, count, &h.buckets, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: Families) -> String {
        f.into_text().unwrap()
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut f = Families::default();
        f.counter("connections_accepted", "Connections admitted.")
            .sample(vec![("listener", "stomp".into())], 3);
        f.gauge("queues", "Queues.").value(2);
        assert_eq!(
            encode(f),
            "# HELP switchboard_connections_accepted_total Connections admitted.\n\
             # TYPE switchboard_connections_accepted_total counter\n\
             switchboard_connections_accepted_total{listener=\"stomp\"} 3\n\
             # HELP switchboard_queues Queues.\n\
             # TYPE switchboard_queues gauge\n\
             switchboard_queues 2\n"
        );
    }

    #[test]
    fn histograms_encode_cumulative_buckets_in_the_metric_unit() {
        let mut f = Families::default();
        let fsyncs = HistogramSnapshot {
            bounds: &[250, 1000],
            buckets: vec![2, 0, 1],
            sum: 4200,
        };
        f.histogram("journal_fsync_seconds", "Fsyncs.", &fsyncs, 1e6);
        assert_eq!(
            encode(f),
            "# HELP switchboard_journal_fsync_seconds Fsyncs.\n\
             # TYPE switchboard_journal_fsync_seconds histogram\n\
             switchboard_journal_fsync_seconds_bucket{le=\"0.00025\"} 2\n\
             switchboard_journal_fsync_seconds_bucket{le=\"0.001\"} 2\n\
             switchboard_journal_fsync_seconds_bucket{le=\"+Inf\"} 3\n\
             switchboard_journal_fsync_seconds_sum 0.0042\n\
             switchboard_journal_fsync_seconds_count 3\n"
        );
    }
}
