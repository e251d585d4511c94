//! Kubernetes Events on Gateways, for `kubectl describe gateway`: a Normal event when a new
//! config is written for its proxy, a Warning when its proxy objects could not be applied.
//! Only changes and failures make events, so a restart or an idle cluster makes none.

use crate::error::Error;
use gateway_api::experimental::gateways::Gateway;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes events as `citoroute-controller` (with the pod's name when it is known).
pub struct GatewayEvents {
    recorder: Recorder,
}

/// An event's note is at most 1 kB.
const MAX_NOTE: usize = 1000;

fn note(text: String) -> String {
    if text.len() <= MAX_NOTE {
        return text;
    }
    let mut end = MAX_NOTE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The event for a config written: `hash` (short) and its number of ConfigMap parts.
pub fn config_written(hash: &str, parts: usize) -> Event {
    let where_ = if parts > 1 {
        format!("split over {parts} ConfigMaps")
    } else {
        "in its ConfigMap".to_string()
    };
    Event {
        type_: EventType::Normal,
        reason: "ConfigWritten".to_string(),
        note: Some(format!("proxy config {hash} written {where_}")),
        action: "ApplyConfig".to_string(),
        secondary: None,
    }
}

/// The event for a failed apply of the Gateway's proxy.
pub fn apply_failed(error: &Error) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "ApplyFailed".to_string(),
        note: Some(note(error.to_string())),
        action: "ApplyProxy".to_string(),
        secondary: None,
    }
}

impl GatewayEvents {
    pub fn new(client: kube::Client) -> GatewayEvents {
        let reporter = Reporter {
            controller: "citoroute-controller".to_string(),
            instance: std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()),
        };
        GatewayEvents {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes `event` on `gw`. A failure is only logged: events are a courtesy, never a
    /// reason to retry a reconcile.
    pub async fn publish(&self, gw: &Gateway, event: Event) {
        let reference: ObjectReference = gw.object_ref(&());
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_an_event() {
        let long = "é".repeat(2000);
        let n = note(long);
        assert!(n.len() <= MAX_NOTE);
        assert!(n.chars().all(|c| c == 'é'));
        assert_eq!(note("short".to_string()), "short");
    }

    #[test]
    fn config_events_say_where_the_config_went() {
        let whole = config_written("abcdef012345", 1);
        assert_eq!(whole.type_, EventType::Normal);
        assert!(whole.note.unwrap_or_default().contains("in its ConfigMap"));
        let split = config_written("abcdef012345", 3);
        assert!(
            split
                .note
                .unwrap_or_default()
                .contains("split over 3 ConfigMaps")
        );
    }

    #[test]
    fn failures_are_warnings_with_the_error() {
        let e = Error::Missing {
            kind: "Gateway",
            field: "metadata.uid",
        };
        let ev = apply_failed(&e);
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(ev.reason, "ApplyFailed");
        assert!(ev.note.unwrap_or_default().contains("metadata.uid"));
    }
}
