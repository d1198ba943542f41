//! `dlq`: the dead-letter queue for an SRE. `list` shows each message with the reason the
//! worker (or the queue's own redrive) put it there and the state of the request it names;
//! `redrive` sends messages back to the request queue; `fail` records the named request
//! FAILED (`dead_lettered`, telling its allow-listed recipients when configured) and removes
//! the message; `delete` removes messages. Messages are picked by SQS message id.
//!
//! Listing receives each message with a short visibility and makes it visible again at once,
//! so it changes nothing but the messages' receive counts (a dead-letter queue has no redrive
//! of its own to trip).

use std::collections::HashMap;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};

use crate::aws::AwsResultExt;
use crate::error::{JobError, redact};
use crate::job;
use crate::message::RequestId;
use crate::policy;
use crate::services::Services;

/// How long a listed message stays invisible before it is handed back (it is handed back at
/// once; this only bounds the damage if the tool dies in between).
const PEEK_VISIBILITY_SECS: i32 = 30;
/// Most messages one receive returns (SQS's limit).
const RECEIVE_BATCH: i32 = 10;

/// One message of the dead-letter queue, as `list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub message_id: String,
    /// Why it is there: the worker's `error_code` attribute, or `redrive_policy` when SQS
    /// moved it after too many receives.
    pub error_code: String,
    pub error_message: String,
    pub receive_count: u64,
    /// The request the body names, when it names one.
    pub request_id: Option<String>,
    /// That request's status, when it is recorded.
    pub status: Option<String>,
    #[serde(skip)]
    receipt: String,
    #[serde(skip)]
    body: String,
}

/// Every message of the dead-letter queue (at most `max`), handed back visible.
pub async fn list(svc: &Services, max: usize) -> Result<Vec<Entry>, JobError> {
    let url = dead_letter_url(svc)?;
    let mut entries = Vec::new();
    while entries.len() < max {
        let messages = receive(svc, url).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            entries.push(entry(svc, m).await?);
        }
    }
    for e in &entries {
        set_visible(svc, url, &e.receipt).await?;
    }
    entries.truncate(max);
    Ok(entries)
}

/// One batch of messages, with their attributes, invisible for a short while.
async fn receive(svc: &Services, url: &str) -> Result<Vec<Message>, JobError> {
    let out = svc
        .clients
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(RECEIVE_BATCH)
        .wait_time_seconds(1)
        .visibility_timeout(PEEK_VISIBILITY_SECS)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .aws("sqs", "ReceiveMessage")?;
    Ok(out.messages.unwrap_or_default())
}

async fn entry(svc: &Services, m: Message) -> Result<Entry, JobError> {
    let attr = |name: &str| {
        m.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_string)
    };
    let body = m.body().unwrap_or_default().to_string();
    let request_id = named_request(&body);
    let status = match &request_id {
        Some(id) => svc
            .state
            .load(id.as_str())
            .await?
            .map(|i| i.status.as_str().to_string()),
        None => None,
    };
    Ok(Entry {
        message_id: m.message_id().unwrap_or_default().to_string(),
        error_code: attr("error_code").unwrap_or_else(|| "redrive_policy".into()),
        error_message: redact(&attr("error_message").unwrap_or_else(|| {
            "moved by the queue's redrive policy after too many receives".into()
        })),
        receive_count: m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        request_id: request_id.map(|r| r.to_string()),
        status,
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        body,
    })
}

/// The request id a body names (`request_id`, or `requestid` in the AWS sample's shape),
/// when it is one.
fn named_request(body: &str) -> Option<RequestId> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let id = v
        .get("request_id")
        .or_else(|| v.get("requestid"))?
        .as_str()?;
    RequestId::parse(id).ok()
}

/// What to do with the messages picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the body back to the request queue, then delete it here.
    Redrive,
    /// Record the named request FAILED (`dead_lettered`), then delete the message.
    Fail,
    /// Delete the message.
    Delete,
}

/// Applies `action` to the messages with these ids (all of them when `ids` is empty).
/// Returns, per message id, what happened; messages not picked are handed back visible.
pub async fn act(
    svc: &Services,
    action: Action,
    ids: &[String],
) -> Result<Vec<(String, Result<String, String>)>, JobError> {
    let url = dead_letter_url(svc)?.to_string();
    let entries = list(svc, usize::MAX).await?;
    let picked: Vec<&Entry> = entries
        .iter()
        .filter(|e| ids.is_empty() || ids.contains(&e.message_id))
        .collect();
    let mut done = Vec::new();
    for id in ids {
        if !picked.iter().any(|e| &e.message_id == id) {
            done.push((id.clone(), Err("not in the dead-letter queue".into())));
        }
    }
    // The listing handed every message back; take each picked one again to act on it.
    let mut receipts = take(svc, &url, &picked).await?;
    for e in picked {
        let Some(receipt) = receipts.remove(&e.message_id) else {
            done.push((
                e.message_id.clone(),
                Err("taken by someone else meanwhile".into()),
            ));
            continue;
        };
        let result = match action {
            Action::Redrive => redrive(svc, e).await,
            Action::Fail => fail(svc, e).await,
            Action::Delete => Ok("deleted".into()),
        };
        match &result {
            Ok(_) => delete(svc, &url, &receipt).await?,
            Err(_) => set_visible(svc, &url, &receipt).await?,
        }
        done.push((e.message_id.clone(), result));
    }
    for receipt in receipts.values() {
        set_visible(svc, &url, receipt).await?;
    }
    Ok(done)
}

/// Receives the queue until the picked messages are in hand: message id → receipt handle.
/// Others met on the way are handed back.
async fn take(
    svc: &Services,
    url: &str,
    picked: &[&Entry],
) -> Result<HashMap<String, String>, JobError> {
    let mut held = HashMap::new();
    let mut others = Vec::new();
    loop {
        let messages = receive(svc, url).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let id = m.message_id().unwrap_or_default().to_string();
            let receipt = m.receipt_handle().unwrap_or_default().to_string();
            if picked.iter().any(|e| e.message_id == id) {
                held.insert(id, receipt);
            } else {
                others.push(receipt);
            }
        }
        if held.len() == picked.len() {
            break;
        }
    }
    for receipt in others {
        set_visible(svc, url, &receipt).await?;
    }
    Ok(held)
}

async fn redrive(svc: &Services, e: &Entry) -> Result<String, String> {
    svc.clients
        .sqs
        .send_message()
        .queue_url(&svc.settings.queue.url)
        .message_body(&e.body)
        .send()
        .await
        .aws("sqs", "SendMessage")
        .map(|_| "sent back to the request queue".into())
        .map_err(|err| err.to_string())
}

async fn fail(svc: &Services, e: &Entry) -> Result<String, String> {
    let Some(id) = e
        .request_id
        .as_deref()
        .and_then(|r| RequestId::parse(r).ok())
    else {
        return Err("the message names no request".into());
    };
    let item = match svc.state.load(id.as_str()).await {
        Ok(Some(item)) => item,
        Ok(None) => return Err(format!("request {id} is not recorded")),
        Err(err) => return Err(err.to_string()),
    };
    if item.status.is_terminal() {
        return Ok(format!("request {id} was already {}", item.status.as_str()));
    }
    let s = &svc.settings;
    let request = crate::message::parse(
        e.body.as_bytes(),
        e.message_id.as_str(),
        s.queue.max_message_bytes,
        &s.compat,
    );
    let audience = policy::audience(s, request.as_ref().ok());
    let reason = JobError::rejected(
        "dead_lettered",
        format!(
            "an operator gave the request up from the dead-letter queue ({})",
            e.error_code
        ),
    );
    let query = item.query.clone().unwrap_or_default();
    match job::fail(svc, item, &id, &query, &audience, reason).await {
        job::Outcome::Finished(status) => Ok(format!("request {id} is {}", status.as_str())),
        other => Err(format!("request {id} could not be recorded ({other:?})")),
    }
}

fn dead_letter_url(svc: &Services) -> Result<&str, JobError> {
    svc.settings
        .queue
        .dead_letter_url
        .as_deref()
        .ok_or_else(|| {
            JobError::rejected("no_dead_letter_queue", "queue.dead_letter_url is not set")
        })
}

async fn set_visible(svc: &Services, url: &str, receipt: &str) -> Result<(), JobError> {
    svc.clients
        .sqs
        .change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(0)
        .send()
        .await
        .aws("sqs", "ChangeMessageVisibility")?;
    Ok(())
}

async fn delete(svc: &Services, url: &str, receipt: &str) -> Result<(), JobError> {
    svc.clients
        .sqs
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .aws("sqs", "DeleteMessage")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_their_request_in_either_shape() {
        assert_eq!(
            named_request(r#"{"version":1,"request_id":"r-1","query":"q"}"#).map(|r| r.to_string()),
            Some("r-1".into())
        );
        assert_eq!(
            named_request(r#"{"requestid":"s1","sku":"x"}"#).map(|r| r.to_string()),
            Some("s1".into())
        );
        assert!(named_request(r#"{"request_id":"bad id"}"#).is_none());
        assert!(named_request("not json").is_none());
    }
}
