//! `evtrack export --from --to`: a project's events of a time range, read through the api's
//! `GET /v1/events/export` answer by answer (following its cursor), into an NDJSON file. An
//! answer that fails is asked for again with the same cursor, so an export survives a
//! dropped connection or a throttled request.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use std::io::Write;
use uuid::Uuid;

/// How often one answer is asked for before the export gives up.
const ATTEMPTS: u32 = 5;

/// `path` opened to write an export into: it holds people's data, so it is readable by its
/// owner alone (a regular file that existed is emptied and narrowed too; `/dev/stdout` is left
/// as it is).
pub fn private_file(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if file.metadata()?.is_file() {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

pub struct RangeExport<'a> {
    /// The api's base URL (the stack's, or the HTTP API's on AWS).
    pub url: &'a str,
    /// A read key of the project, or an admin key.
    pub key: &'a str,
    pub project: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub output: &'a std::path::Path,
}

impl RangeExport<'_> {
    /// Writes the events, with a progress bar over the time range; returns how many.
    pub async fn run(&self) -> anyhow::Result<u64> {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
        let mut file = std::io::BufWriter::new(private_file(self.output)?);
        let span = (self.to - self.from).num_seconds().max(1) as u64;
        let progress = indicatif::ProgressBar::new(span);
        progress.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent}% of the range, {msg} ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (mut cursor, mut events) = (None::<String>, 0u64);
        loop {
            let (body, next) = self.answer(&client, cursor.as_deref()).await?;
            file.write_all(&body)?;
            events += body.iter().filter(|&&byte| byte == b'\n').count() as u64;
            // Events come oldest first: the last one's time is how far the export got.
            let last = body.split(|&byte| byte == b'\n').rev().find(|line| !line.is_empty());
            if let Some(at) = last.and_then(event_time) {
                progress.set_position((at - self.from).num_seconds().clamp(0, span as i64) as u64);
            }
            progress.set_message(format!("{events} events"));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        file.flush()?;
        progress.finish_and_clear();
        Ok(events)
    }

    /// One answer: its body and the cursor of the next, asked for up to `ATTEMPTS` times.
    async fn answer(
        &self,
        client: &reqwest::Client,
        cursor: Option<&str>,
    ) -> anyhow::Result<(Vec<u8>, Option<String>)> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("project", &self.project.to_string());
        query.append_pair("from", &self.from.to_rfc3339());
        query.append_pair("to", &self.to.to_rfc3339());
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let url = format!("{}/v1/events/export?{}", self.url.trim_end_matches('/'), query.finish());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = client.get(&url).bearer_auth(self.key).send().await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    let next = response
                        .headers()
                        .get(evtrack_api::EXPORT_CURSOR_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_string);
                    match response.bytes().await {
                        Ok(body) => return Ok((body.to_vec(), next)),
                        Err(err) => format!("the answer was cut: {err}"),
                    }
                }
                Ok(response) if response.status().is_client_error() && response.status().as_u16() != 429 => {
                    let status = response.status();
                    bail!("the api refused the export ({status}): {}", response.text().await.unwrap_or_default());
                }
                Ok(response) => format!("the api answered {}", response.status()),
                Err(err) => format!("no answer: {err}"),
            };
            if attempt >= ATTEMPTS {
                bail!("{failure}; gave up after {ATTEMPTS} attempts");
            }
            tracing::warn!(attempt, "{failure}; asking again");
            tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
}

fn event_time(line: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Timed {
        timestamp: DateTime<Utc>,
    }
    serde_json::from_slice::<Timed>(line).ok().map(|event| event.timestamp)
}
