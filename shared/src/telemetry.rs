//! Logging, set up in one place: JSON lines on Lambda (CloudWatch), readable text locally.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match format {
        // Lambda adds its own timestamps and request ids to every line.
        LogFormat::Json => builder.json().flatten_event(true).without_time().try_init(),
        LogFormat::Text => builder.with_writer(std::io::stderr).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Writes one metric value as a CloudWatch Embedded Metric Format line on stdout: Lambda's
/// log capture turns it into a metric without an API call. Dimensions must not hold secrets.
pub fn emit_metric(name: &str, value: f64, unit: &str, dimensions: &[(&str, &str)]) {
    let mut line = serde_json::Map::new();
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    line.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "evtrack",
                "Dimensions": [names],
                "Metrics": [{"Name": name, "Unit": unit}],
            }],
        }),
    );
    for (dimension, value) in dimensions {
        line.insert((*dimension).into(), serde_json::Value::from(*value));
    }
    line.insert(name.into(), serde_json::Value::from(value));
    println!("{}", serde_json::Value::Object(line));
}
