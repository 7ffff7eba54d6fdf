//! Logging and metrics, set up in one place: JSON lines on Lambda (CloudWatch), readable text
//! locally; metrics as CloudWatch Embedded Metric Format lines (`MetricLine`).

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    METRICS_ON.store(matches!(format, LogFormat::Json), Ordering::Relaxed);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match format {
        // Lambda adds its own timestamps and request ids to every line.
        LogFormat::Json => builder.json().flatten_event(true).without_time().try_init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Metric lines are written only where something reads them: on Lambda (JSON logs).
static METRICS_ON: AtomicBool = AtomicBool::new(false);

/// The unit of a metric (a subset of CloudWatch's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::None => "None",
        }
    }
}

/// One CloudWatch Embedded Metric Format line: Lambda's log capture turns it into metrics
/// without an API call. Every metric carries the `Function` dimension; each metric names the
/// other dimensions it is counted by. Dimension values must not hold secrets or user data.
#[derive(Debug)]
pub struct MetricLine {
    members: serde_json::Map<String, serde_json::Value>,
    directives: Vec<Directive>,
}

/// Metrics counted by the same dimensions.
#[derive(Debug)]
struct Directive {
    dimensions: Vec<&'static str>,
    metrics: Vec<(&'static str, Unit)>,
}

impl MetricLine {
    /// A line of `function`'s metrics (`ingest`, `consumer`, …).
    pub fn new(function: &str) -> Self {
        let mut members = serde_json::Map::new();
        members.insert("Function".into(), function.into());
        Self { members, directives: Vec::new() }
    }

    /// Sets a dimension's value for every metric of the line that names it.
    pub fn dimension(mut self, name: &'static str, value: &str) -> Self {
        self.members.insert(name.into(), value.into());
        self
    }

    /// Adds `name = value`, counted by `Function` and `dimensions`.
    pub fn metric(mut self, name: &'static str, value: f64, unit: Unit, dimensions: &[&'static str]) -> Self {
        let names: Vec<&'static str> = std::iter::once("Function").chain(dimensions.iter().copied()).collect();
        match self.directives.iter_mut().find(|directive| directive.dimensions == names) {
            Some(directive) => directive.metrics.push((name, unit)),
            None => self.directives.push(Directive { dimensions: names, metrics: vec![(name, unit)] }),
        }
        self.members.insert(name.into(), value.into());
        self
    }

    /// The JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        let directives: Vec<serde_json::Value> = self
            .directives
            .iter()
            .map(|Directive { dimensions, metrics }| {
                let metrics: Vec<serde_json::Value> = metrics
                    .iter()
                    .map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit.as_str()}))
                    .collect();
                serde_json::json!({"Namespace": NAMESPACE, "Dimensions": [dimensions], "Metrics": metrics})
            })
            .collect();
        let mut line = self.members.clone();
        line.insert(
            "_aws".into(),
            serde_json::json!({"Timestamp": chrono::Utc::now().timestamp_millis(), "CloudWatchMetrics": directives}),
        );
        serde_json::Value::Object(line)
    }

    /// Writes the line on stdout, on Lambda; elsewhere nothing reads it.
    pub fn emit(self) {
        if METRICS_ON.load(Ordering::Relaxed) && !self.directives.is_empty() {
            println!("{}", self.to_json());
        }
    }
}

pub const NAMESPACE: &str = "evtrack";
