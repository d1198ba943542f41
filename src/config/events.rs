//! The `[events]` section: where completion events go (docs/EVENTS.md). Destinations are
//! named here; a request may name destinations but never give an address of its own.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Completion events and their destinations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    /// Destinations every event goes to, whatever the request names (e.g. a reply queue).
    pub default: Vec<String>,
    /// How long one delivery may take (connect, TLS, request and response).
    pub timeout_secs: u64,
    /// Deliveries of one event to one destination before it is given up as undelivered.
    pub max_attempts: u32,
    /// The destinations, by name (`[A-Za-z0-9_-]{1,64}`).
    pub destinations: BTreeMap<String, Destination>,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            default: Vec::new(),
            timeout_secs: 10,
            max_attempts: 4,
            destinations: BTreeMap::new(),
        }
    }
}

/// One destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// An SQS queue (a `.fifo` queue gets the request id as group and the event id as
    /// deduplication id).
    Sqs { queue_url: String },
    /// An SNS topic.
    Sns { topic_arn: String },
    /// An HTTPS endpoint; every delivery is signed with HMAC-SHA256.
    Webhook {
        url: String,
        /// The name of the environment variable holding the signing secret (never the secret
        /// itself in a file).
        secret_env: String,
        /// Extra certificate authorities (PEM) trusted besides the system's, for private
        /// endpoints.
        #[serde(default)]
        ca_file: Option<String>,
    },
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Sqs { .. } => "sqs",
            Destination::Sns { .. } => "sns",
            Destination::Webhook { .. } => "webhook",
        }
    }
}

/// A destination name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_destination_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl EventsSettings {
    /// What is wrong with the section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=60).contains(&self.timeout_secs) {
            p.push("events.timeout_secs must be 1–60".into());
        }
        if !(1..=10).contains(&self.max_attempts) {
            p.push("events.max_attempts must be 1–10".into());
        }
        for name in &self.default {
            if !self.destinations.contains_key(name) {
                p.push(format!(
                    "events.default names {name:?}, which is not in events.destinations"
                ));
            }
        }
        for (name, d) in &self.destinations {
            if !is_destination_name(name) {
                p.push(format!(
                    "events.destinations.{name}: names are [A-Za-z0-9_-], at most 64 characters"
                ));
            }
            let at = format!("events.destinations.{name}");
            match d {
                Destination::Sqs { queue_url } if !queue_url.starts_with("http") => {
                    p.push(format!("{at}.queue_url must be a queue URL"))
                }
                Destination::Sns { topic_arn } if !topic_arn.starts_with("arn:") => {
                    p.push(format!("{at}.topic_arn must be a topic ARN"))
                }
                // The secret is read (and checked) when the publisher starts.
                Destination::Webhook {
                    url, secret_env, ..
                } => {
                    if !url.starts_with("https://") || url.parse::<hyper::Uri>().is_err() {
                        p.push(format!("{at}.url must be an https:// URL"));
                    }
                    if secret_env.is_empty() {
                        p.push(format!("{at}.secret_env must name an environment variable"));
                    }
                }
                _ => {}
            }
        }
        p
    }
}
