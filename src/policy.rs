//! What a request may ask for and who may be mailed.
//!
//! [`prepare`] renders the request's query: a configured template with its typed parameters,
//! or raw SQL if the configuration allows it and [`crate::sqlcheck`] accepts it. Every email the worker sends — success or failure — goes only to
//! recipients returned by [`recipients`], which applies the configured allow-list; a request
//! rejected for its recipients mails none of them (only [`operator_recipients`], from the
//! configuration, may be told).

use crate::config::Settings;
use crate::error::JobError;
use crate::message::{EmailAddress, ExportRequest, Layout, QuerySource};
use crate::sqlcheck;

/// A request checked against the configuration, ready to run.
pub struct Prepared {
    pub select: String,
    pub layout: Layout,
    /// Recipients that passed the allow-list ([`recipients`]).
    pub recipients: Vec<EmailAddress>,
    /// Event destinations ([`destinations`]).
    pub destinations: Vec<String>,
}

/// Renders the query. Recipients were checked before, by [`recipients`].
pub fn prepare(
    settings: &Settings,
    request: &ExportRequest,
    recipients: Vec<EmailAddress>,
) -> Result<Prepared, JobError> {
    let destinations = destinations(settings, request)?;
    let select = match &request.query {
        QuerySource::Template { name, params } => {
            let template = settings.templates.get(name).ok_or_else(|| {
                JobError::rejected(
                    "unknown_template",
                    format!("no query template named {name:?}"),
                )
            })?;
            template.render(params)?
        }
        QuerySource::Sql(sql) => {
            if !settings.sql.allow_raw {
                return Err(JobError::rejected(
                    "raw_sql_disabled",
                    "raw SQL is not enabled on this worker",
                ));
            }
            sqlcheck::check_raw(sql, &settings.sql)
                .map_err(|e| JobError::rejected("invalid_sql", e))?;
            sql.clone()
        }
    };
    Ok(Prepared {
        select,
        layout: request
            .layout
            .unwrap_or(request.format.default_layout(settings.archive.layout)),
        recipients,
        destinations,
    })
}

/// The request's recipients (or the configured defaults), each checked against the allow-list.
/// Empty when the request is told by events only: it names destinations and no recipients,
/// or it names neither and events go to a default destination while no default recipients
/// are configured.
pub fn recipients(
    settings: &Settings,
    request: &ExportRequest,
) -> Result<Vec<EmailAddress>, JobError> {
    let recipients = if !request.recipients.is_empty() {
        request.recipients.clone()
    } else if !request.events.is_empty() {
        return Ok(Vec::new());
    } else {
        parse_all(&settings.email.default_recipients)
    };
    if recipients.is_empty() {
        if !settings.events.default.is_empty() {
            return Ok(Vec::new());
        }
        return Err(JobError::rejected(
            "no_recipients",
            "the request names no recipients or event destinations, and none are configured",
        ));
    }
    let allowed = &settings.email.allowed_domains;
    if let Some(r) = recipients.iter().find(|r| {
        !allowed.is_empty() && !allowed.iter().any(|d| d.eq_ignore_ascii_case(r.domain()))
    }) {
        // The domain is the operator's business; the address stays out of records and logs.
        return Err(JobError::rejected(
            "recipient_not_allowed",
            format!("recipient domain {} is not allowed", r.domain()),
        ));
    }
    Ok(recipients)
}

/// Where the request's events go: the configured default destinations and those the request
/// names, each of which must be configured (a name, never an address: the request cannot
/// make the worker call anywhere it was not configured to).
pub fn destinations(settings: &Settings, request: &ExportRequest) -> Result<Vec<String>, JobError> {
    let configured = &settings.events.destinations;
    if let Some(unknown) = request.events.iter().find(|n| !configured.contains_key(*n)) {
        return Err(JobError::rejected(
            "unknown_destination",
            format!("no event destination named {unknown:?} is configured"),
        ));
    }
    Ok(default_destinations(settings)
        .into_iter()
        .chain(request.events.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// Who is told that a request ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audience {
    /// Recipients that passed the allow-list, or the configured operators.
    pub recipients: Vec<EmailAddress>,
    /// Event destinations.
    pub destinations: Vec<String>,
}

/// Who is told that `request` ended: its allow-listed recipients (the operators when its own
/// were refused) and its event destinations (the defaults when it names an unknown one). For
/// a request that could not be read: the operators and the default destinations.
pub fn audience(settings: &Settings, request: Option<&ExportRequest>) -> Audience {
    match request {
        Some(r) => Audience {
            recipients: recipients(settings, r).unwrap_or_else(|_| operator_recipients(settings)),
            destinations: destinations(settings, r)
                .unwrap_or_else(|_| default_destinations(settings)),
        },
        None => Audience {
            recipients: operator_recipients(settings),
            destinations: default_destinations(settings),
        },
    }
}

/// The destinations every event goes to.
pub fn default_destinations(settings: &Settings) -> Vec<String> {
    settings.events.default.clone()
}

/// The configured operator addresses, told when a request is rejected for its recipients.
pub fn operator_recipients(settings: &Settings) -> Vec<EmailAddress> {
    parse_all(&settings.email.operator_recipients)
}

/// Addresses from the configuration (validated when it was loaded).
fn parse_all(addresses: &[String]) -> Vec<EmailAddress> {
    addresses
        .iter()
        .filter_map(|r| EmailAddress::parse(r).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Format, QuerySource, RequestId};

    fn request(to: &[&str]) -> ExportRequest {
        ExportRequest {
            request_id: RequestId::parse("r").unwrap(),
            query: QuerySource::Sql("select 1".into()),
            format: Format::Csv,
            layout: None,
            recipients: to.iter().map(|a| EmailAddress::parse(a).unwrap()).collect(),
            events: Vec::new(),
            requested_by: None,
        }
    }

    fn settings() -> Settings {
        let mut s = Settings::for_tests();
        s.email.allowed_domains = vec!["example.com".into()];
        s.email.default_recipients = vec!["team@example.com".into()];
        s.email.operator_recipients = vec!["ops@example.com".into()];
        s
    }

    #[test]
    fn only_allow_listed_domains_pass() {
        let s = settings();
        let ok = recipients(&s, &request(&["a@EXAMPLE.com"])).unwrap();
        assert_eq!(ok.len(), 1);
        let e = recipients(&s, &request(&["a@example.com", "b@evil.test"])).unwrap_err();
        assert_eq!(e.code(), "recipient_not_allowed");
        assert!(
            !e.to_string().contains("b@"),
            "no address in the error: {e}"
        );
    }

    #[test]
    fn defaults_apply_when_the_request_names_none() {
        let mut s = settings();
        assert_eq!(
            recipients(&s, &request(&[])).unwrap()[0].to_string(),
            "team@example.com"
        );
        s.email.default_recipients.clear();
        assert_eq!(
            recipients(&s, &request(&[])).unwrap_err().code(),
            "no_recipients"
        );
        assert_eq!(operator_recipients(&s)[0].to_string(), "ops@example.com");
    }

    #[test]
    fn a_request_that_names_destinations_only_gets_no_email() {
        let mut s = settings();
        s.events.destinations.insert(
            "replies".into(),
            crate::config::Destination::Sqs {
                queue_url: "http://127.0.0.1/q".into(),
            },
        );
        let mut r = request(&[]);
        r.events = vec!["replies".into()];
        assert!(recipients(&s, &r).unwrap().is_empty());
        assert_eq!(destinations(&s, &r).unwrap(), ["replies"]);
        // Defaults join what the request names, once each.
        s.events.default = vec!["replies".into()];
        assert_eq!(destinations(&s, &r).unwrap(), ["replies"]);
        // A request naming nothing, with no default recipients but a default destination:
        // told by events only.
        s.email.default_recipients.clear();
        assert!(recipients(&s, &request(&[])).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_destination_fails_the_request_and_its_event_goes_to_the_defaults() {
        let mut s = settings();
        s.events.default = vec!["replies".into()];
        let mut r = request(&["a@example.com"]);
        r.events = vec!["elsewhere".into()];
        assert_eq!(
            destinations(&s, &r).unwrap_err().code(),
            "unknown_destination"
        );
        let told = audience(&s, Some(&r));
        assert_eq!(told.destinations, ["replies"]);
        assert_eq!(told.recipients[0].to_string(), "a@example.com");
    }
}
