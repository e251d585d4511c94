//! Status of the `citoroute.io` objects: conditions only, by Server-Side Apply of the status
//! subresource with our field manager (no other controller writes these kinds).

use super::{StatusWriter, covers, status_of, with_times};
use crate::apply::FIELD_MANAGER;
use crate::error::Error;
use crate::watch::Stores;
use citoroute_translate::{Condition, LlmKey, LlmKind, Translation};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;

/// The `status` to apply, or `None` when `existing` already says it.
pub fn wanted_status(
    conditions: &[Condition],
    existing: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let old = existing.and_then(|e| e.get("conditions"));
    let want = with_times(conditions, old, now);
    let empty = Value::Array(Vec::new());
    if covers(old.filter(|v| !v.is_null()).unwrap_or(&empty), &want) {
        return None;
    }
    Some(json!({ "conditions": want }))
}

impl StatusWriter {
    /// Writes the changed statuses of every `citoroute.io` kind whose CRD is served.
    pub(super) async fn llm(
        &self,
        t: &Translation,
        stores: &Stores,
        now: &str,
        errors: &mut Vec<Error>,
    ) {
        if let Some(s) = &stores.llm_backends {
            self.llm_kind(LlmKind::Backend, s, t, now, errors).await;
        }
        if let Some(s) = &stores.llm_routes {
            self.llm_kind(LlmKind::Route, s, t, now, errors).await;
        }
        if let Some(s) = &stores.consumers {
            self.llm_kind(LlmKind::Consumer, s, t, now, errors).await;
        }
        if let Some(s) = &stores.jwt_policies {
            self.llm_kind(LlmKind::JwtPolicy, s, t, now, errors).await;
        }
    }

    async fn llm_kind<K>(
        &self,
        kind: LlmKind,
        store: &Store<K>,
        t: &Translation,
        now: &str,
        errors: &mut Vec<Error>,
    ) where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug
            + 'static,
    {
        for obj in store.state() {
            let (Some(ns), name) = (obj.namespace(), obj.name_any()) else {
                continue;
            };
            let key = LlmKey {
                kind,
                namespace: ns.clone(),
                name: name.clone(),
            };
            let Some(conditions) = t.llm_statuses.get(&key) else {
                continue;
            };
            let Some(status) = wanted_status(conditions, status_of(&*obj).as_ref(), now) else {
                continue;
            };
            let body = json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "status": status,
            });
            self.metrics.write(&format!("{}/status", kind.as_str()));
            let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                errors.push(Error::Status {
                    kind: kind.as_str(),
                    namespace: ns,
                    name,
                    source: Box::new(e),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(ok: bool, msg: &str) -> Condition {
        Condition {
            type_: "Accepted".to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: "Accepted".to_string(),
            message: msg.to_string(),
            observed_generation: 2,
        }
    }

    #[test]
    fn written_once_then_only_on_change() {
        let first = wanted_status(&[cond(true, "ok")], None, "T0");
        let Some(first) = first else {
            panic!("a new object gets a status");
        };
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "T0");
        assert_eq!(first["conditions"][0]["observedGeneration"], 2);
        // As written: nothing to do, whatever the time.
        assert_eq!(wanted_status(&[cond(true, "ok")], Some(&first), "T1"), None);
        // A new message keeps the transition time; a new status takes the new time.
        let msg = wanted_status(&[cond(true, "other")], Some(&first), "T1");
        assert_eq!(
            msg.map(|v| v["conditions"][0]["lastTransitionTime"].clone()),
            Some(json!("T0"))
        );
        let flip = wanted_status(&[cond(false, "bad")], Some(&first), "T1");
        assert_eq!(
            flip.map(|v| v["conditions"][0]["lastTransitionTime"].clone()),
            Some(json!("T1"))
        );
    }
}
