//! Status writes. GatewayClass and Gateway status go out as Server-Side Apply of the status
//! subresource (our field manager owns the conditions and listeners it sets). Route and
//! BackendTLSPolicy status is shared with other controllers, so those objects are
//! read-modify-written: only the `parents` (routes) or `ancestors` (policies) entries with our
//! controllerName change, everything else is written back as read, guarded by the
//! resourceVersion. Every condition gets `lastTransitionTime`, kept from the existing condition
//! of the same type when its status did not change. Nothing is written when the status already
//! says what we would write.

use crate::apply::FIELD_MANAGER;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::watch::Stores;
use citoroute_translate::{
    Condition, GATEWAY_GROUP, GatewayStatus, ObjectKey, PolicyAncestorStatus, RouteKey, RouteKind,
    Translation,
};
use futures::StreamExt;
use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::tlsroutes::TlsRoute;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Route status writes sent at once (each one a read and a replace).
const STATUS_WRITES_IN_FLIGHT: usize = 16;

mod llm;

/// The current time as `metav1.Time` writes it (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Conditions as JSON with `lastTransitionTime`: kept from `existing` (a JSON array of
/// conditions) for a condition of the same type and status, else `now`.
pub fn with_times(conditions: &[Condition], existing: Option<&Value>, now: &str) -> Value {
    let old = existing.and_then(Value::as_array);
    Value::Array(
        conditions
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                let kept = old
                    .and_then(|old| {
                        old.iter().find(|o| {
                            o.get("type").and_then(Value::as_str) == Some(c.type_.as_str())
                                && o.get("status").and_then(Value::as_str)
                                    == Some(c.status.as_str())
                        })
                    })
                    .and_then(|o| o.get("lastTransitionTime"))
                    .and_then(Value::as_str)
                    .unwrap_or(now)
                    .to_string();
                if let Value::Object(m) = &mut v {
                    m.insert("lastTransitionTime".to_string(), Value::String(kept));
                }
                v
            })
            .collect(),
    )
}

/// Whether `have` already says everything `want` says: objects by key (extra keys in `have`
/// are ignored), arrays of equal length whose every `want` element is covered by some `have`
/// element (order does not matter), scalars equal.
pub fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| covers(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && w.iter().all(|wv| h.iter().any(|hv| covers(hv, wv)))
        }
        _ => have == want,
    }
}

/// A parentRef with the CRD's defaults filled in and nulls dropped, for comparing.
fn normal_ref(v: &Value) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.retain(|_, v| !v.is_null());
    m.entry("group")
        .or_insert_with(|| Value::String(GATEWAY_GROUP.to_string()));
    m.entry("kind")
        .or_insert_with(|| Value::String("Gateway".to_string()));
    Value::Object(m)
}

/// A status list several controllers share, each owning the entries with its
/// `controllerName`: a route's `status.parents` keyed by `parentRef`, a policy's
/// `status.ancestors` keyed by `ancestorRef`.
#[derive(Debug, Clone, Copy)]
pub struct SharedList {
    pub field: &'static str,
    pub ref_key: &'static str,
}

pub const PARENTS: SharedList = SharedList {
    field: "parents",
    ref_key: "parentRef",
};

pub const ANCESTORS: SharedList = SharedList {
    field: "ancestors",
    ref_key: "ancestorRef",
};

/// One entry of ours: the reference (as JSON) and its conditions.
pub type Entry<'a> = (Value, &'a [Condition]);

fn parent_entries(ours: &[citoroute_translate::RouteParentStatus]) -> Vec<Entry<'_>> {
    ours.iter()
        .map(|p| {
            let r = serde_json::to_value(&p.parent_ref).unwrap_or(Value::Null);
            (r, p.conditions.as_slice())
        })
        .collect()
}

fn ancestor_entries(ours: &[PolicyAncestorStatus]) -> Vec<Entry<'_>> {
    ours.iter()
        .map(|a| {
            let r = serde_json::to_value(&a.ancestor_ref).unwrap_or(Value::Null);
            (r, a.conditions.as_slice())
        })
        .collect()
}

/// Merges our entries into an existing shared list: other controllers' entries stay as they
/// are (and where they are); ours are replaced by `ours`, with lastTransitionTimes kept from
/// our previous entry for the same reference.
pub fn merge_entries(
    list: SharedList,
    existing: &[Value],
    ours: &[Entry],
    controller: &str,
    now: &str,
) -> Vec<Value> {
    let is_ours = |v: &Value| v.get("controllerName").and_then(Value::as_str) == Some(controller);
    let mut out: Vec<Value> = existing.iter().filter(|v| !is_ours(v)).cloned().collect();
    for (r, conditions) in ours {
        let nref = normal_ref(r);
        let old = existing
            .iter()
            .find(|v| is_ours(v) && v.get(list.ref_key).map(normal_ref).as_ref() == Some(&nref));
        let mut entry = serde_json::Map::new();
        entry.insert(list.ref_key.to_string(), r.clone());
        entry.insert("controllerName".to_string(), json!(controller));
        entry.insert(
            "conditions".to_string(),
            with_times(conditions, old.and_then(|o| o.get("conditions")), now),
        );
        out.push(Value::Object(entry));
    }
    out
}

/// The Gateway status we write, as JSON.
pub fn gateway_status_json(
    st: &GatewayStatus,
    existing: Option<&Value>,
    address: Option<&str>,
    now: &str,
) -> Value {
    let old_listeners = existing
        .and_then(|e| e.get("listeners"))
        .and_then(Value::as_array);
    let listeners: Vec<Value> = st
        .listeners
        .iter()
        .map(|l| {
            let old = old_listeners
                .and_then(|ls| {
                    ls.iter()
                        .find(|o| o.get("name").and_then(Value::as_str) == Some(l.name.as_str()))
                })
                .and_then(|o| o.get("conditions"));
            json!({
                "name": l.name,
                "supportedKinds": l.supported_kinds,
                "attachedRoutes": l.attached_routes,
                "conditions": with_times(&l.conditions, old, now),
            })
        })
        .collect();
    let mut v = json!({
        "conditions": with_times(&st.conditions, existing.and_then(|e| e.get("conditions")), now),
        "listeners": listeners,
    });
    let addresses: Vec<Value> = st
        .addresses
        .iter()
        .map(|a| json!({"type": a.type_, "value": a.value}))
        .chain(address.map(|a| json!({"type": "IPAddress", "value": a})))
        .collect();
    if !addresses.is_empty()
        && let Value::Object(m) = &mut v
    {
        m.insert("addresses".to_string(), Value::Array(addresses));
    }
    v
}

/// Writes statuses.
pub struct StatusWriter {
    client: Client,
    metrics: Arc<Metrics>,
    controller: String,
}

fn status_of<K: Serialize>(o: &K) -> Option<Value> {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .filter(|v| !v.is_null())
}

impl StatusWriter {
    pub fn new(client: Client, metrics: Arc<Metrics>, controller: String) -> StatusWriter {
        StatusWriter {
            client,
            metrics,
            controller,
        }
    }

    async fn apply_status<K>(
        &self,
        api: Api<K>,
        name: &str,
        ns: &str,
        status: Value,
    ) -> Result<(), Error>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let dt = K::DynamicType::default();
        let body = json!({
            "apiVersion": K::api_version(&dt),
            "kind": K::kind(&dt),
            "status": status,
        });
        self.metrics.write(&format!("{}/status", K::kind(&dt)));
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::Status {
            kind: if K::kind(&dt) == "Gateway" {
                "Gateway"
            } else {
                "GatewayClass"
            },
            namespace: ns.to_string(),
            name: name.to_string(),
            source: Box::new(e),
        })
    }

    /// Writes every status of `t` that changed. Returns the errors (each object is tried).
    pub async fn write(
        &self,
        t: &Translation,
        stores: &Stores,
        addresses: &BTreeMap<ObjectKey, Option<String>>,
    ) -> Vec<Error> {
        let now = now();
        let mut errors = Vec::new();
        for (name, st) in &t.gateway_class_statuses {
            let Some(gc) = stores
                .gateway_classes
                .get(&kube::runtime::reflector::ObjectRef::new(name))
            else {
                continue;
            };
            let existing = status_of(&*gc);
            let features: Vec<Value> = st
                .supported_features
                .iter()
                .map(|f| json!({ "name": f }))
                .collect();
            let want = json!({
                "conditions": with_times(&st.conditions, existing.as_ref().and_then(|e| e.get("conditions")), &now),
                "supportedFeatures": features,
            });
            if existing
                .as_ref()
                .is_some_and(|e| covers_gateway_class(e, &want))
            {
                continue;
            }
            let api = Api::<gateway_api::experimental::gatewayclasses::GatewayClass>::all(
                self.client.clone(),
            );
            if let Err(e) = self.apply_status(api, name, "", want).await {
                errors.push(e);
            }
        }
        for ((ns, name), st) in &t.gateway_statuses {
            let Some(gw) = stores
                .gateways
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
            else {
                continue;
            };
            let existing = status_of(&*gw);
            let addr = addresses
                .get(&(ns.clone(), name.clone()))
                .and_then(|a| a.as_deref());
            let want = gateway_status_json(st, existing.as_ref(), addr, &now);
            if existing.as_ref().is_some_and(|e| covers_gateway(e, &want)) {
                continue;
            }
            let api = Api::<gateway_api::experimental::gateways::Gateway>::namespaced(
                self.client.clone(),
                ns,
            );
            if let Err(e) = self.apply_status(api, name, ns, want).await {
                errors.push(e);
            }
        }
        self.routes(RouteKind::Http, &stores.http_routes, t, &now, &mut errors)
            .await;
        if let Some(s) = &stores.grpc_routes {
            self.routes::<GrpcRoute>(RouteKind::Grpc, s, t, &now, &mut errors)
                .await;
        }
        if let Some(s) = &stores.tls_routes {
            self.routes::<TlsRoute>(RouteKind::Tls, s, t, &now, &mut errors)
                .await;
        }
        if let Some(s) = &stores.backend_tls_policies {
            self.backend_tls_policies(s, t, &now, &mut errors).await;
        }
        self.llm(t, stores, &now, &mut errors).await;
        errors
    }

    async fn routes<K>(
        &self,
        kind: RouteKind,
        store: &Store<K>,
        t: &Translation,
        now: &str,
        errors: &mut Vec<Error>,
    ) where
        K: Resource<DynamicType = ()> + Clone + Serialize + 'static,
    {
        let mut changed = Vec::new();
        for route in store.state() {
            let (Some(ns), name) = (route.namespace(), route.name_any()) else {
                continue;
            };
            let key = RouteKey {
                kind,
                namespace: ns.clone(),
                name: name.clone(),
            };
            let ours = t
                .route_statuses
                .get(&key)
                .map(|s| parent_entries(&s.parents))
                .unwrap_or_default();
            if self.list_changed(PARENTS, &*route, &ours, now) {
                changed.push((ns, name, ours));
            }
        }
        errors.extend(self.write_all::<K>(PARENTS, changed, now).await);
    }

    /// Our `ancestors` entries of every BackendTLSPolicy (removed where we have none now).
    async fn backend_tls_policies(
        &self,
        store: &Store<BackendTlsPolicy>,
        t: &Translation,
        now: &str,
        errors: &mut Vec<Error>,
    ) {
        let mut changed = Vec::new();
        for policy in store.state() {
            let (Some(ns), name) = (policy.namespace(), policy.name_any()) else {
                continue;
            };
            let ours = t
                .backend_tls_policy_statuses
                .get(&(ns.clone(), name.clone()))
                .map(|s| ancestor_entries(&s.ancestors))
                .unwrap_or_default();
            if self.list_changed(ANCESTORS, &*policy, &ours, now) {
                changed.push((ns, name, ours));
            }
        }
        errors.extend(
            self.write_all::<BackendTlsPolicy>(ANCESTORS, changed, now)
                .await,
        );
    }

    /// Whether our entries of `obj`'s shared status list differ from what the cache shows.
    fn list_changed<K>(&self, list: SharedList, obj: &K, ours: &[Entry<'_>], now: &str) -> bool
    where
        K: Serialize,
    {
        let existing: Vec<Value> = status_of(obj)
            .and_then(|s| s.get(list.field).and_then(Value::as_array).cloned())
            .unwrap_or_default();
        entries_changed(list, &existing, ours, &self.controller, now)
    }

    /// Writes our entries of every `(namespace, name, entries)`, a few at a time: each write
    /// is a read and a replace, and a bulk apply of a thousand routes written one after the
    /// other would hold back the next reconcile (the next config) for seconds.
    async fn write_all<K>(
        &self,
        list: SharedList,
        changed: Vec<(String, String, Vec<Entry<'_>>)>,
        now: &str,
    ) -> Vec<Error>
    where
        K: Resource<DynamicType = ()>,
    {
        futures::stream::iter(changed)
            .map(|(ns, name, ours)| async move {
                self.write_shared::<K>(list, &ns, &name, &ours, now).await
            })
            .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await
    }

    /// Read-modify-write of the status subresource: only our entries of `list` change, the
    /// write is guarded by the resourceVersion just read.
    async fn write_shared<K>(
        &self,
        list: SharedList,
        ns: &str,
        name: &str,
        ours: &[Entry<'_>],
        now: &str,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let ar = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let err = |e: kube::Error| Error::Status {
            kind: shared_kind(&ar.kind),
            namespace: ns.to_string(),
            name: name.to_string(),
            source: Box::new(e),
        };
        // Read fresh: the store may lag, and the write is guarded by this resourceVersion.
        let mut obj = api.get_status(name).await.map_err(err)?;
        let existing: Vec<Value> = obj
            .data
            .get("status")
            .and_then(|s| s.get(list.field))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !entries_changed(list, &existing, ours, &self.controller, now) {
            return Ok(());
        }
        let merged = merge_entries(list, &existing, ours, &self.controller, now);
        match obj.data.get_mut("status") {
            Some(Value::Object(s)) => {
                s.insert(list.field.to_string(), Value::Array(merged));
            }
            _ => {
                if let Value::Object(d) = &mut obj.data {
                    d.insert("status".to_string(), json!({ list.field: merged }));
                }
            }
        }
        obj.metadata.managed_fields = None;
        self.metrics.write(&format!("{}/status", ar.kind));
        api.replace_status(name, &PostParams::default(), &obj)
            .await
            .map(|_| ())
            .map_err(err)
    }
}

fn shared_kind(kind: &str) -> &'static str {
    match kind {
        "HTTPRoute" => "HTTPRoute",
        "GRPCRoute" => "GRPCRoute",
        "TLSRoute" => "TLSRoute",
        "BackendTLSPolicy" => "BackendTLSPolicy",
        _ => "route",
    }
}

/// Whether writing our entries would change a shared status list.
pub fn entries_changed(
    list: SharedList,
    existing: &[Value],
    ours: &[Entry],
    controller: &str,
    now: &str,
) -> bool {
    let mine = |v: &Value| v.get("controllerName").and_then(Value::as_str) == Some(controller);
    let have: Vec<Value> = existing
        .iter()
        .filter(|v| mine(v))
        .map(|v| normal_entry(list, v.clone()))
        .collect();
    let want: Vec<Value> = merge_entries(list, existing, ours, controller, now)
        .into_iter()
        .filter(mine)
        .map(|v| normal_entry(list, v))
        .collect();
    !covers(&Value::Array(have), &Value::Array(want))
}

fn normal_entry(list: SharedList, mut v: Value) -> Value {
    let r = v.get(list.ref_key).map(normal_ref);
    if let (Value::Object(m), Some(r)) = (&mut v, r) {
        m.insert(list.ref_key.to_string(), r);
    }
    v
}

/// GatewayClass: only the conditions are ours.
fn covers_gateway_class(have: &Value, want: &Value) -> bool {
    let empty = Value::Array(Vec::new());
    ["conditions", "supportedFeatures"].iter().all(|k| {
        covers(
            have.get(*k).filter(|v| !v.is_null()).unwrap_or(&empty),
            want.get(*k).unwrap_or(&empty),
        )
    })
}

/// Gateway: conditions, listeners and addresses must match (other keys are not ours).
fn covers_gateway(have: &Value, want: &Value) -> bool {
    let empty = Value::Array(Vec::new());
    ["conditions", "listeners", "addresses"].iter().all(|k| {
        covers(
            have.get(*k).filter(|v| !v.is_null()).unwrap_or(&empty),
            want.get(*k).unwrap_or(&empty),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use citoroute_translate::{ParentReference, PolicyAncestorStatus, RouteParentStatus};

    fn cond(t: &str, ok: bool) -> Condition {
        Condition {
            type_: t.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: t.to_string(),
            message: String::new(),
            observed_generation: 1,
        }
    }

    fn ours(name: &str, ok: bool) -> RouteParentStatus {
        RouteParentStatus {
            parent_ref: ParentReference {
                group: GATEWAY_GROUP.to_string(),
                kind: "Gateway".to_string(),
                namespace: None,
                name: name.to_string(),
                section_name: None,
                port: None,
            },
            controller_name: "us".to_string(),
            conditions: vec![cond("Accepted", ok)],
        }
    }

    #[test]
    fn times_are_kept_while_status_holds() {
        let old = json!([{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"}]);
        let v = with_times(&[cond("Accepted", true)], Some(&old), "T1");
        assert_eq!(v[0]["lastTransitionTime"], "T0");
        let v = with_times(&[cond("Accepted", false)], Some(&old), "T1");
        assert_eq!(v[0]["lastTransitionTime"], "T1");
    }

    fn merge_parents(existing: &[Value], ours: &[RouteParentStatus], now: &str) -> Vec<Value> {
        merge_entries(PARENTS, existing, &parent_entries(ours), "us", now)
    }

    fn route_changed(existing: &[Value], ours: &[RouteParentStatus], now: &str) -> bool {
        entries_changed(PARENTS, existing, &parent_entries(ours), "us", now)
    }

    #[test]
    fn other_controllers_entries_survive() {
        let theirs =
            json!({"parentRef": {"name": "gw"}, "controllerName": "them", "conditions": []});
        let existing = vec![theirs.clone()];
        let merged = merge_parents(&existing, &[ours("gw", true)], "T1");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], theirs);
        assert!(route_changed(&existing, &[ours("gw", true)], "T1"));
        // Once written (with the API server's defaulting dropped), nothing changes.
        let mut written = merged.clone();
        if let Some(r) = written[1]
            .get_mut("parentRef")
            .and_then(Value::as_object_mut)
        {
            r.remove("group");
            r.remove("kind");
        }
        assert!(!route_changed(&written, &[ours("gw", true)], "T2"));
        assert!(route_changed(&written, &[ours("gw", false)], "T2"));
        // Dropping our entry is a change; their entry stays.
        assert!(route_changed(&written, &[], "T2"));
        assert_eq!(merge_parents(&written, &[], "T2"), vec![theirs]);
    }

    #[test]
    fn policy_ancestors_keep_other_controllers_and_times() {
        let ancestor = |ok| PolicyAncestorStatus {
            ancestor_ref: ours("gw", ok).parent_ref,
            controller_name: "us".to_string(),
            conditions: vec![cond("Accepted", ok)],
        };
        let theirs =
            json!({"ancestorRef": {"name": "gw"}, "controllerName": "them", "conditions": []});
        let old_ours = json!({
            "ancestorRef": {"name": "gw", "namespace": "default"},
            "controllerName": "us",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "", "observedGeneration": 1, "lastTransitionTime": "T0"}],
        });
        let mut a = ancestor(true);
        a.ancestor_ref.namespace = Some("default".to_string());
        let existing = vec![theirs.clone(), old_ours];
        let entries = ancestor_entries(std::slice::from_ref(&a));
        assert!(!entries_changed(ANCESTORS, &existing, &entries, "us", "T1"));
        let merged = merge_entries(ANCESTORS, &existing, &entries, "us", "T1");
        assert_eq!(merged[0], theirs);
        assert_eq!(merged[1]["conditions"][0]["lastTransitionTime"], "T0");
        assert!(merged[1].get("parentRef").is_none());
        let mut b = ancestor(false);
        b.ancestor_ref.namespace = Some("default".to_string());
        let flipped = ancestor_entries(std::slice::from_ref(&b));
        assert!(entries_changed(ANCESTORS, &existing, &flipped, "us", "T1"));
        // No entry of ours any more (the policy no longer affects our Gateways): removed.
        assert_eq!(
            merge_entries(ANCESTORS, &existing, &[], "us", "T1"),
            vec![theirs]
        );
    }

    #[test]
    fn covers_ignores_order_and_extra_keys() {
        let have = json!({"a": [{"x": 1, "y": 2}, {"x": 3}], "b": 1});
        assert!(covers(&have, &json!({"a": [{"x": 3}, {"x": 1}]})));
        assert!(!covers(&have, &json!({"a": [{"x": 1}]})));
        assert!(!covers(&have, &json!({"c": 1})));
    }
}
