//! `check`: the configuration is valid (it was loaded to get here) and every dependency and
//! permission the worker needs answers: both queues, the table, both buckets, the email
//! transport and a trivial Redshift statement. One line per probe, saying what to fix.

use std::time::Duration;

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::aws::{AwsResultExt, Clients};
use crate::config::{EmailTransport, Settings};
use crate::message::RequestId;
use crate::notify::Mailer;
use crate::redshift::Redshift;
use crate::state::OPEN_INDEX;

mod storage;

use storage::{archive_bucket, links, upload_bucket};

/// How long the trivial Redshift statement may take before the probe gives up on it.
const REDSHIFT_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the probes talk to: the settings, the clients, and the components whose own calls
/// are probed.
struct Target<'a> {
    settings: &'a Settings,
    clients: &'a Clients,
    mailer: Result<Mailer, String>,
    redshift: Redshift,
}

/// The name of the first probe: the configuration itself.
pub const CONFIGURATION: &str = "configuration";

/// One probe's verdict.
pub struct Probe {
    pub name: String,
    pub result: Result<String, String>,
}

/// The configuration (valid, or loading it would have failed before) and the email template
/// files it names, without touching anything else.
pub fn configuration(settings: &Settings) -> Probe {
    let result = crate::notify::templates::Templates::load(&settings.email.templates)
        .map(|_| format!("{} query templates", settings.templates.len()));
    Probe {
        name: CONFIGURATION.into(),
        result,
    }
}

/// Runs every probe; the order is the order a reader fixes things in.
pub async fn run(settings: &Settings, clients: &Clients) -> Vec<Probe> {
    let svc = &Target {
        settings,
        clients,
        mailer: Mailer::new(&settings.email, clients.sesv2.clone()),
        redshift: Redshift::new(clients.redshift.clone(), settings.redshift.clone()),
    };
    let s = settings;
    let mut probes = vec![configuration(s)];
    let mut push =
        |name: String, result: Result<String, String>| probes.push(Probe { name, result });

    push(
        format!("queue {}", s.queue.url),
        queue(svc, &s.queue.url, "queue.url").await,
    );
    match &s.queue.dead_letter_url {
        Some(url) => push(
            format!("dead-letter queue {url}"),
            queue(svc, url, "queue.dead_letter_url").await,
        ),
        None => push(
            "dead-letter queue".into(),
            Ok("not configured: unusable messages stay for the queue's redrive".into()),
        ),
    }
    push(
        "attempts and the queue's redrive".into(),
        attempts_below_redrive(svc).await,
    );
    push(format!("table {}", s.state.table), table(svc).await);
    push(
        format!("upload bucket {}", s.upload.bucket),
        upload_bucket(svc).await,
    );
    push(
        format!("archive bucket {}", s.archive.bucket),
        archive_bucket(svc).await,
    );
    let transport = match s.email.transport {
        EmailTransport::Ses => "ses",
        EmailTransport::Smtp => "smtp",
    };
    push(format!("email ({transport})"), email(svc).await);
    push("redshift".into(), redshift(svc).await);
    push("presigned links".into(), links(svc).await);
    probes
}

/// One attribute of a queue (None when the queue does not have it); the error says what to
/// check, naming the configuration `key` of the URL.
async fn queue_attribute(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
    key: &str,
) -> Result<Option<String>, String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .aws("sqs", "GetQueueAttributes")
        .map_err(|e| format!("{e} — check {key} and the sqs:GetQueueAttributes permission"))?;
    Ok(out.attributes.and_then(|a| a.get(&name).cloned()))
}

async fn queue(svc: &Target<'_>, url: &str, key: &str) -> Result<String, String> {
    let arn = queue_attribute(&svc.clients.sqs, url, QueueAttributeName::QueueArn, key).await?;
    Ok(format!("reachable ({})", arn.unwrap_or_default()))
}

/// The queue's redrive `maxReceiveCount`, or None when the queue has no redrive policy.
pub async fn max_receive_count(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Option<u32>, String> {
    let policy = queue_attribute(
        sqs,
        queue_url,
        QueueAttributeName::RedrivePolicy,
        "queue.url",
    )
    .await?;
    policy.map(|p| parse_max_receive_count(&p)).transpose()
}

/// `maxReceiveCount` from a RedrivePolicy document (SQS gives it as a number or a string).
fn parse_max_receive_count(policy: &str) -> Result<u32, String> {
    let v: serde_json::Value = serde_json::from_str(policy)
        .map_err(|e| format!("the queue's RedrivePolicy is not JSON: {e}"))?;
    let count = &v["maxReceiveCount"];
    count
        .as_u64()
        .or_else(|| count.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| "the queue's RedrivePolicy has no maxReceiveCount".into())
}

/// The worker must see the delivery on which it fails a request itself (`attempts_exhausted`):
/// if SQS moved the message to the dead-letter queue first, the request would stay open.
pub fn attempts_fit(max_attempts: u32, max_receive_count: Option<u32>) -> Result<String, String> {
    match max_receive_count {
        None => Ok(format!(
            "the queue has no redrive policy; the worker ends requests after {max_attempts} deliveries"
        )),
        Some(limit) if max_attempts < limit => Ok(format!(
            "worker.max_attempts {max_attempts} is below the queue's maxReceiveCount {limit}"
        )),
        Some(limit) => Err(format!(
            "worker.max_attempts is {max_attempts} but the queue's redrive maxReceiveCount is {limit}: SQS would dead-letter the message before the worker records attempts_exhausted, leaving the request open; set worker.max_attempts below {limit} or raise maxReceiveCount above {max_attempts}"
        )),
    }
}

async fn attempts_below_redrive(svc: &Target<'_>) -> Result<String, String> {
    attempts_fit(
        svc.settings.worker.max_attempts,
        max_receive_count(&svc.clients.sqs, &svc.settings.queue.url).await?,
    )
}

async fn table(svc: &Target<'_>) -> Result<String, String> {
    let name = &svc.settings.state.table;
    let out = svc
        .clients
        .dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .aws("dynamodb", "DescribeTable")
        .map_err(|e| format!("{e} — create the table or fix state.table"))?;
    let t = out.table.ok_or("DescribeTable returned no table")?;
    let key = |attr: &str, kind: KeyType| {
        t.key_schema()
            .iter()
            .any(|k| k.attribute_name() == attr && *k.key_type() == kind)
    };
    let string = |attr: &str| {
        t.attribute_definitions()
            .iter()
            .any(|d| d.attribute_name() == attr && *d.attribute_type() == ScalarAttributeType::S)
    };
    if !(key("request_id", KeyType::Hash)
        && key("sk", KeyType::Range)
        && string("request_id")
        && string("sk"))
    {
        return Err(format!(
            "table {name} must have partition key request_id (S) and sort key sk (S)"
        ));
    }
    let index = t
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some(OPEN_INDEX));
    let index_ok = index.is_some_and(|i| {
        let keys = i.key_schema();
        keys.iter()
            .any(|k| k.attribute_name() == "open_shard" && *k.key_type() == KeyType::Hash)
            && keys
                .iter()
                .any(|k| k.attribute_name() == "updated_at" && *k.key_type() == KeyType::Range)
    });
    if !index_ok && svc.settings.sweeper.enabled {
        return Err(format!(
            "table {name} needs the global secondary index {OPEN_INDEX} (partition key open_shard (S), sort key updated_at (S), keys only) for the sweeper; see the DynamoDB item in docs/ARCHITECTURE.md"
        ));
    }
    Ok(format!(
        "partition key request_id (S), sort key sk (S), index {OPEN_INDEX}{}",
        if index_ok {
            ""
        } else {
            " missing (sweeper off)"
        }
    ))
}

async fn email(svc: &Target<'_>) -> Result<String, String> {
    let e = &svc.settings.email;
    match e.transport {
        EmailTransport::Smtp => match &svc.mailer {
            Ok(mailer) => mailer.probe().await,
            Err(e) => Err(e.clone()),
        }
        .map(|()| format!("{}:{} answers", e.smtp.host, e.smtp.port))
        .map_err(|err| format!("{err} — check email.smtp.host, port, tls and credentials")),
        EmailTransport::Ses => {
            let domain = e.from.rsplit('@').next().unwrap_or_default();
            for identity in [e.from.as_str(), domain] {
                let out = svc
                    .clients
                    .sesv2
                    .get_email_identity()
                    .email_identity(identity)
                    .send()
                    .await
                    .aws("sesv2", "GetEmailIdentity");
                // VerificationStatus SUCCESS also means verified (moto sets only that one).
                if let Ok(out) = out
                    && (out.verified_for_sending_status
                        || out.verification_status
                            == Some(aws_sdk_sesv2::types::VerificationStatus::Success))
                {
                    return Ok(format!("identity {identity} is verified for sending"));
                }
            }
            Err(format!(
                "neither {} nor {domain} is a verified SES identity — verify one, or fix email.from",
                e.from
            ))
        }
    }
}

async fn redshift(svc: &Target<'_>) -> Result<String, String> {
    let probe_id = RequestId::parse(&format!("check-{}", uuid::Uuid::new_v4().simple()))
        .map_err(|e| e.to_string())?;
    let id = svc
        .redshift
        .execute("SELECT 1", &probe_id, 1)
        .await
        .map_err(|e| {
            format!("{e} — check redshift.* and the redshift-data:ExecuteStatement permission")
        })?;
    let finished = tokio::time::timeout(
        REDSHIFT_PROBE_TIMEOUT,
        svc.redshift.wait(&id, || async { false }),
    )
    .await;
    match finished {
        Ok(Ok(_)) => Ok(format!("SELECT 1 finished (statement {id})")),
        Ok(Err(e)) => Err(format!(
            "{e} — check the database, user or secret in redshift.*"
        )),
        Err(_) => {
            svc.redshift.cancel(&id).await;
            Err(format!(
                "SELECT 1 did not finish within {} s",
                REDSHIFT_PROBE_TIMEOUT.as_secs()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_attempts_must_be_below_the_redrive_limit() {
        assert!(attempts_fit(4, Some(5)).is_ok());
        assert!(attempts_fit(5, None).is_ok());
        let e = attempts_fit(5, Some(5)).unwrap_err();
        assert!(
            e.contains("is 5") && e.contains("maxReceiveCount is 5"),
            "{e}"
        );
        assert!(attempts_fit(9, Some(5)).is_err());
    }

    #[test]
    fn redrive_policies_give_their_limit_as_number_or_string() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:dlq";
        for policy in [
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"7"}}"#),
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":7}}"#),
        ] {
            assert_eq!(parse_max_receive_count(&policy), Ok(7));
        }
        assert!(parse_max_receive_count("{}").is_err());
        assert!(parse_max_receive_count("nope").is_err());
    }
}
