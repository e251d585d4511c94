//! Where an LLMRoute attaches (its parentRefs against the Gateways' listeners), and the final
//! check of each Gateway's config with its LLM routes.

use super::Problem;
use super::checks::shown_kind;
use crate::backends::Ctx;
use crate::gateways::GatewayState;
use crate::routes::namespace_allowed;
use crate::{GATEWAY_GROUP, ObjectKey};
use citoroute_config::ListenerProtocol;
use citoroute_config::hostname::intersect;
use citoroute_config::validate::validate;
use citoroute_crds as crds;
use std::collections::{BTreeMap, BTreeSet};

/// A Gateway and the listeners (by index) an LLMRoute attaches to, each with the hostnames
/// it serves there.
pub(super) type Attachment = (ObjectKey, Vec<(usize, Vec<String>)>);

/// The listeners of a Gateway an LLMRoute's parentRef attaches to, with the hostnames it
/// serves on each.
pub(super) fn attach_parent(
    ctx: &Ctx,
    gws: &BTreeMap<ObjectKey, GatewayState>,
    route_ns: &str,
    hostnames: &[String],
    pref: &crds::ParentReference,
) -> Result<Attachment, Problem> {
    if pref.group != GATEWAY_GROUP || pref.kind != "Gateway" {
        return Err((
            "InvalidKind",
            format!(
                "parentRef {}: kind {} is not supported; use a Gateway",
                pref.name,
                shown_kind(&pref.kind, &pref.group)
            ),
        ));
    }
    let gw_ns = pref.namespace.as_deref().unwrap_or(route_ns);
    let key = (gw_ns.to_string(), pref.name.clone());
    let shown = format!("Gateway {gw_ns}/{}", pref.name);
    let Some(gw) = gws.get(&key) else {
        return Err((
            "NoMatchingParent",
            format!("{shown} not found, or not of a CitoRoute GatewayClass"),
        ));
    };
    if let Some((_, msg)) = &gw.rejected {
        return Err((
            "NoMatchingParent",
            format!("{shown} is not accepted: {msg}"),
        ));
    }
    let candidates: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            pref.section_name.as_deref().is_none_or(|s| s == l.ir.name)
                && pref.port.is_none_or(|p| p == l.ir.port)
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        let what = match (&pref.section_name, pref.port) {
            (Some(s), Some(p)) => format!("{shown} has no listener {s} on port {p}"),
            (Some(s), None) => format!("{shown} has no listener named {s}"),
            (None, Some(p)) => format!("{shown} has no listener on port {p}"),
            (None, None) => format!("{shown} has no listeners"),
        };
        return Err(("NoMatchingParent", what));
    }
    let http: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            matches!(
                gw.listeners[i].protocol,
                Some(ListenerProtocol::Http | ListenerProtocol::Https)
            )
        })
        .collect();
    if http.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!("no HTTP or HTTPS listener of {shown} matches the parentRef"),
        ));
    }
    let allowed: Vec<usize> = http
        .into_iter()
        .filter(|&i| namespace_allowed(ctx, &gw.listeners[i], gw_ns, route_ns))
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!("no listener of {shown} allows routes from namespace {route_ns}"),
        ));
    }
    let matched: Vec<(usize, Vec<String>)> = allowed
        .into_iter()
        .filter_map(|i| {
            intersect(gw.listeners[i].ir.hostname.as_deref(), hostnames).map(|h| (i, h))
        })
        .collect();
    if matched.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            format!("no hostname of the route matches a listener hostname of {shown}"),
        ));
    }
    let programmed: Vec<(usize, Vec<String>)> = matched
        .into_iter()
        .filter(|(i, _)| gw.listeners[*i].programmed() && gw.rejected.is_none())
        .collect();
    if programmed.is_empty() {
        return Err((
            "NoMatchingParent",
            format!("the matching listeners of {shown} are not programmed (see its status)"),
        ));
    }
    Ok((key, programmed))
}

/// Validates a Gateway's config with its LLM routes, drops the routes it refuses (returned
/// with the reason), then the backends and consumers no route uses any more, and the `[jwt]`
/// when no LLM route is left.
pub(super) fn check_gateway(
    gw: &mut GatewayState,
    mut keys: Vec<ObjectKey>,
) -> Vec<(ObjectKey, Problem)> {
    let mut refused = Vec::new();
    // Each pass drops at least one route, so this ends; the bound is a guard.
    for _ in 0..=keys.len() {
        let Err(problems) = validate(&gw.config) else {
            break;
        };
        let mut bad: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut other = Vec::new();
        for p in &problems.0 {
            if let Some(rest) = p.path.strip_prefix("llm_routes[")
                && let Some((idx, at)) = rest.split_once(']')
                && let Ok(idx) = idx.parse::<usize>()
            {
                let at = at.trim_start_matches('.');
                bad.entry(idx)
                    .or_default()
                    .push(format!("{at}: {}", p.message));
            } else if ["llm_backends", "consumers", "jwt"]
                .iter()
                .any(|s| p.path.starts_with(s))
            {
                other.push(p.to_string());
            }
        }
        if bad.is_empty() {
            if !other.is_empty() {
                // Not tied to one route: leave the AI gateway out of this Gateway altogether.
                let msg = format!("generated config is invalid: {}", other.join("; "));
                for k in keys.drain(..) {
                    refused.push((k, ("Invalid", msg.clone())));
                }
                gw.config.llm_routes.clear();
            }
            break;
        }
        for (idx, msgs) in bad.iter().rev() {
            if *idx < keys.len() {
                let k = keys.remove(*idx);
                gw.config.llm_routes.remove(*idx);
                refused.push((k, ("Invalid", msgs.join("; "))));
            }
        }
    }
    let used: BTreeSet<String> = gw
        .config
        .llm_routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| b.backend.clone()))
        .collect();
    gw.config.llm_backends.retain(|n, _| used.contains(n));
    let used: BTreeSet<String> = gw
        .config
        .llm_routes
        .iter()
        .flat_map(|r| r.consumers.iter().cloned())
        .collect();
    gw.config.consumers.retain(|n, _| used.contains(n));
    if gw.config.llm_routes.is_empty() {
        gw.config.jwt = None;
    }
    refused
}
