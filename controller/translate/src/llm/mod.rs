//! The AI gateway objects (`citoroute.io`): LLMBackends, Consumers and JWTValidationPolicies
//! are checked on their own; each LLMRoute then attaches to its parent Gateways' HTTP and
//! HTTPS listeners (parentRefs and `allowedRoutes.namespaces`, as for an HTTPRoute) and fills
//! their `[[llm_routes]]`, `[llm_backends]`, `[consumers]` and `[jwt]`. Credentials stay out
//! of the config: it names files the I/O layer fills from the referenced Secrets
//! ([`Translation::llm_files`]).
//!
//! Anything the proxy would refuse is left out and reported, because the proxy refuses a
//! whole config when one file or section does not load: an LLMRoute is dropped from a
//! Gateway rather than shipped broken, and a route naming Consumers is never shipped open.

use crate::backends::Ctx;
use crate::gateways::GatewayState;
use crate::llm_refs::{LlmKey, LlmKind};
use crate::status::Condition;
use crate::{ObjectKey, Snapshot, Translation};
use checks::{BackendEval, ConfigMaps, PolicyEval, check_backend, check_consumer, check_policy};
use citoroute_config as cfg;
use citoroute_crds as crds;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use parents::{attach_parent, check_gateway};
use routes::{Emitted, RouteRefs, emit, resolve_refs};
use std::collections::{BTreeMap, BTreeSet};

mod checks;
mod parents;
mod routes;

/// A condition reason and its message.
pub(super) type Problem = (&'static str, String);

fn key_of(meta: &ObjectMeta) -> Option<ObjectKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// Tie-break order of Gateway API: oldest first, then namespace/name.
fn age_order(meta: &ObjectMeta) -> (Option<Time>, Option<String>, Option<String>) {
    (
        meta.creation_timestamp.clone(),
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

fn conditions(
    accepted: Result<String, Problem>,
    resolved: Option<Result<(), Problem>>,
    generation: i64,
) -> Vec<Condition> {
    let mut out = vec![match accepted {
        Ok(msg) => Condition::new("Accepted", true, "Accepted", msg, generation),
        Err((reason, msg)) => Condition::new("Accepted", false, reason, msg, generation),
    }];
    match resolved {
        Some(Ok(())) => out.push(Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all references resolved",
            generation,
        )),
        Some(Err((reason, msg))) => out.push(Condition::new(
            "ResolvedRefs",
            false,
            reason,
            msg,
            generation,
        )),
        None => {}
    }
    out
}

/// What happened to one route on one Gateway.
type Outcomes = Vec<(ObjectKey, Result<(), Problem>)>;

/// Translates every `citoroute.io` object; call after the Gateway API routes attached.
pub(crate) fn attach(
    s: &Snapshot,
    ctx: &Ctx,
    gws: &mut BTreeMap<ObjectKey, GatewayState>,
    t: &mut Translation,
) {
    let status = |kind, (ns, name): &ObjectKey| LlmKey {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
    };

    let config_maps: ConfigMaps = s
        .config_maps
        .iter()
        .map(|c| ((c.namespace.as_str(), c.name.as_str()), c))
        .collect();
    let mut backends: BTreeMap<ObjectKey, BackendEval> = BTreeMap::new();
    for b in &s.llm_backends {
        let Some(key) = key_of(&b.metadata) else {
            continue;
        };
        let ev = check_backend(ctx, &config_maps, &key.0, b);
        let g = b.metadata.generation.unwrap_or_default();
        let conds = conditions(
            match &ev.invalid {
                Some(p) => Err(p.clone()),
                None => Ok(format!(
                    "{} model {}",
                    b.spec.provider.as_str(),
                    b.spec.model
                )),
            },
            Some(ev.unresolved.clone().map_or(Ok(()), Err)),
            g,
        );
        t.llm_statuses.insert(status(LlmKind::Backend, &key), conds);
        backends.insert(key, ev);
    }

    let mut consumers: BTreeMap<ObjectKey, Result<cfg::Consumer, Problem>> = BTreeMap::new();
    for c in &s.consumers {
        let Some(key) = key_of(&c.metadata) else {
            continue;
        };
        let ev = check_consumer(c);
        let conds = conditions(
            ev.as_ref().map_err(Clone::clone).map(|_| {
                format!(
                    "tokens whose claim {} is {:?}",
                    c.spec.jwt_claim_match.key, c.spec.jwt_claim_match.value
                )
            }),
            None,
            c.metadata.generation.unwrap_or_default(),
        );
        t.llm_statuses
            .insert(status(LlmKind::Consumer, &key), conds);
        consumers.insert(key, ev);
    }

    let mut policies: BTreeMap<ObjectKey, (ObjectKey, PolicyEval)> = BTreeMap::new();
    let mut ordered: Vec<&crds::JwtValidationPolicy> = s.jwt_policies.iter().collect();
    ordered.sort_by_key(|p| age_order(&p.metadata));
    for p in ordered {
        let Some(key) = key_of(&p.metadata) else {
            continue;
        };
        let outcome = match check_policy(ctx, &config_maps, gws, &key.0, p) {
            Ok((gw, _)) if policies.contains_key(&gw) => {
                let (winner, _) = &policies[&gw];
                Err((
                    "Conflicted",
                    format!(
                        "Gateway {}/{} already has the older JWTValidationPolicy {}",
                        gw.0, gw.1, winner.1
                    ),
                ))
            }
            Ok((gw, ev)) => {
                let msg = format!("validates tokens on Gateway {}/{}", gw.0, gw.1);
                policies.insert(gw, (key.clone(), ev));
                Ok(msg)
            }
            Err(e) => Err(e),
        };
        let conds = conditions(outcome, None, p.metadata.generation.unwrap_or_default());
        t.llm_statuses
            .insert(status(LlmKind::JwtPolicy, &key), conds);
    }

    // Routes, oldest first: the order breaks ties between equal paths in the proxy.
    let mut routes: Vec<&crds::LlmRoute> = s.llm_routes.iter().collect();
    routes.sort_by_key(|r| age_order(&r.metadata));
    let mut outcomes: BTreeMap<ObjectKey, (i64, Outcomes, Option<Problem>, Vec<Problem>)> =
        BTreeMap::new();
    // Per Gateway, the LLMRoute each config LLM route came from (parallel lists).
    let mut llm_keys: BTreeMap<ObjectKey, Vec<ObjectKey>> = BTreeMap::new();
    for r in routes {
        let Some(key) = key_of(&r.metadata) else {
            continue;
        };
        let ns = key.0.as_str();
        let spec = &r.spec;
        let RouteRefs {
            backends: refs,
            consumers: consumer_names,
            problems: ref_problems,
        } = resolve_refs(ns, spec, &backends, &consumers);
        let not_served: Option<Problem> = if refs.is_empty() {
            Some((
                "UnresolvedRefs",
                "no backendRef resolves to a usable LLMBackend; the route is not served"
                    .to_string(),
            ))
        } else if !spec.consumer_refs.is_empty() && consumer_names.is_empty() {
            Some((
                "UnresolvedRefs",
                "no consumerRef resolves; the route is not served (a route naming consumers is never opened to everyone)"
                    .to_string(),
            ))
        } else {
            None
        };
        let hostnames: Vec<String> = spec.hostnames.iter().map(|h| h.0.clone()).collect();
        let mut per_gw: BTreeMap<ObjectKey, Vec<(usize, Vec<String>)>> = BTreeMap::new();
        let mut results: Outcomes = Vec::new();
        let mut seen = BTreeSet::new();
        for pref in &spec.parent_refs {
            if !seen.insert((
                &pref.group,
                &pref.kind,
                &pref.namespace,
                &pref.name,
                &pref.section_name,
                pref.port,
            )) {
                continue;
            }
            let gw_key = (
                pref.namespace.clone().unwrap_or_else(|| ns.to_string()),
                pref.name.clone(),
            );
            let outcome = match &not_served {
                Some(p) => Err(p.clone()),
                None => attach_parent(ctx, gws, ns, &hostnames, pref).and_then(|(gw, list)| {
                    if !consumer_names.is_empty() && !policies.contains_key(&gw) {
                        return Err((
                            "NoJWTValidationPolicy",
                            format!(
                                "Gateway {}/{} has no accepted JWTValidationPolicy, which a route naming consumers needs",
                                gw.0, gw.1
                            ),
                        ));
                    }
                    Ok(list)
                }),
            };
            match outcome {
                Ok(list) => {
                    let acc = per_gw.entry(gw_key.clone()).or_default();
                    for (i, hosts) in list {
                        if !acc.iter().any(|(j, _)| *j == i) {
                            acc.push((i, hosts));
                        }
                    }
                    if !results.iter().any(|(k, _)| *k == gw_key) {
                        results.push((gw_key, Ok(())));
                    }
                }
                Err(p) => results.push((gw_key, Err(p))),
            }
        }
        // A Gateway reached through one parentRef is served even if another one failed.
        results.retain(|(k, res)| res.is_ok() || !per_gw.contains_key(k));
        for (gw_key, list) in per_gw {
            let Some(gw) = gws.get_mut(&gw_key) else {
                continue;
            };
            let keys = llm_keys.entry(gw_key).or_default();
            let route = Emitted {
                key: &key,
                spec,
                backends: &refs,
                consumers: &consumer_names,
            };
            emit(gw, keys, &route, list, &backends, &consumers);
        }
        let generation = r.metadata.generation.unwrap_or_default();
        outcomes.insert(key, (generation, results, not_served, ref_problems));
    }

    for (gw_key, keys) in llm_keys {
        let Some(gw) = gws.get_mut(&gw_key) else {
            continue;
        };
        let policy = policies.get(&gw_key).map(|(_, ev)| ev);
        gw.config.jwt = policy.map(|p| p.jwt.clone());
        let refused = check_gateway(gw, keys);
        for (route, problem) in refused {
            if let Some((_, results, _, _)) = outcomes.get_mut(&route) {
                for (k, res) in results.iter_mut() {
                    if *k == gw_key {
                        *res = Err(problem.clone());
                    }
                }
            }
        }
        let mut files = BTreeSet::new();
        for name in gw.config.llm_backends.keys() {
            if let Some((bns, bname)) = name.split_once('/')
                && let Some(ev) = backends.get(&(bns.to_string(), bname.to_string()))
            {
                files.extend(ev.files.iter().cloned());
            }
        }
        if gw.config.jwt.is_some()
            && let Some(p) = policy
        {
            files.extend(p.files.iter().cloned());
        }
        if !files.is_empty() {
            t.llm_files.insert(gw_key, files);
        }
    }

    for (key, (generation, results, not_served, ref_problems)) in outcomes {
        let served: Vec<String> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(k, _)| format!("{}/{}", k.0, k.1))
            .collect();
        let failed: Vec<&Problem> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .collect();
        let accepted = if let Some(p) = &not_served {
            Err(p.clone())
        } else if !served.is_empty() {
            let mut msg = format!("served on Gateway {}", served.join(", "));
            for (_, m) in &failed {
                msg.push_str("; not attached: ");
                msg.push_str(m);
            }
            Ok(msg)
        } else if let Some((reason, _)) = failed.first() {
            let msgs: Vec<&str> = failed.iter().map(|(_, m)| m.as_str()).collect();
            Err((*reason, msgs.join("; ")))
        } else {
            Err(("NoMatchingParent", "no parentRefs".to_string()))
        };
        let resolved = match ref_problems.first() {
            None => Ok(()),
            Some((reason, _)) => {
                let msgs: Vec<&str> = ref_problems.iter().map(|(_, m)| m.as_str()).collect();
                Err((*reason, msgs.join("; ")))
            }
        };
        let conds = conditions(accepted, Some(resolved), generation);
        t.llm_statuses.insert(status(LlmKind::Route, &key), conds);
    }
}
