//! The controller's errors. Each variant is one `reason` label of
//! `citoroute_controller_errors_total`.

/// Why a reconcile (or part of one) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Server-Side Apply of a proxy object failed.
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Writing a status failed.
    #[error("writing the status of {kind} {namespace}/{name}: {source}")]
    Status {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading an object the reconcile needs (e.g. a listener certificate Secret) failed.
    #[error("reading {kind} {namespace}/{name}: {source}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A config or object could not be serialized.
    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },
    /// An object lacks a field the controller needs (name, uid, ...).
    #[error("{kind} is missing {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
}

impl Error {
    /// The metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply { source, .. } | Error::Status { source, .. } if is_conflict(source) => {
                "conflict"
            }
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::Read { .. } => "read",
            Error::Encode { .. } => "encode",
            Error::Missing { .. } => "missing_field",
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
