//! The AWS sample's message shape, `{"requestid": …, "sku": …, …}`, mapped onto a configured
//! template.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{ExportRequest, Format, QuerySource, RequestId};

/// Maps the AWS sample's `{"requestid", "sku", …}` messages onto a template (`[compat]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Template that sample-shaped messages run; empty disables the compatibility.
    pub sample_template: Option<String>,
    /// Message field → template parameter.
    pub sample_params: BTreeMap<String, String>,
}

/// A message without `version`, read as the sample's shape if that is configured.
pub(super) fn parse(
    object: &serde_json::Map<String, Value>,
    request_id: &RequestId,
    compat: &CompatSettings,
) -> Result<ExportRequest, (&'static str, String)> {
    let Some(template) = &compat.sample_template else {
        return Err((
            "invalid_message",
            "message has no version and the compatibility mapping for sample messages is not configured".into(),
        ));
    };
    let mut params = BTreeMap::new();
    for (field, value) in object {
        if field == "requestid" {
            continue;
        }
        // The sample's other fields (productname, createdate) carry nothing the query uses.
        if let Some(param) = compat.sample_params.get(field) {
            params.insert(param.clone(), value.clone());
        }
    }
    Ok(ExportRequest {
        events: Vec::new(),
        request_id: request_id.clone(),
        query: QuerySource::Template {
            name: template.clone(),
            params,
        },
        format: Format::Csv,
        layout: None,
        recipients: Vec::new(),
        requested_by: Some("aws-sample".into()),
    })
}
