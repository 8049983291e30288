//! A saved plan (`byoc plan --out FILE`), applied exactly by `byoc apply FILE`: the
//! revision it was made from (environment directory and commit), the fingerprint of the
//! live state it observed, and its steps; sealed with the SHA-256 of all of that, so an
//! edited or damaged file is refused before anything is read from it.
//!
//! ```json
//! {"body": {"format": "byoc-plan/1", "environment": "envs/prod", "commit": "…",
//!           "revision": "main@sha1:…", "kubernetes": true, "observed": "<hex>",
//!           "plan": {…}},
//!  "sha256": "<hex of the body, serialized with sorted keys and no spaces>"}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format's name and version, in every file.
pub const FORMAT: &str = "byoc-plan/1";

/// What a saved plan pins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Body {
    /// [`FORMAT`].
    pub format: String,
    /// The environment directory inside the repository.
    pub environment: String,
    /// The commit planned.
    pub commit: String,
    /// Its name (`main@sha1:…`), for messages.
    pub revision: String,
    /// Whether the Kubernetes half was planned (false: `--cloud-only`).
    pub kubernetes: bool,
    /// Fingerprint of the live state observed.
    pub observed: String,
    /// The plan, as `byoc plan --output json` shows steps.
    pub plan: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    body: serde_json::Value,
    sha256: String,
}

/// Why a saved plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// Not readable or writable.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Not a saved plan, or changed since it was written.
    #[error("{path} is not a byoc plan as `byoc plan --out` wrote it ({message}); nothing was applied: make the plan again")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn digest(body: &serde_json::Value) -> String {
    // serde_json's maps keep keys sorted: one text for one value.
    Sha256::digest(body.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `body` to `path`, sealed.
pub fn write(path: &Path, body: &Body) -> Result<(), PlanFileError> {
    let io = |e: &dyn std::fmt::Display| PlanFileError::Io { path: path.display().to_string(), message: e.to_string() };
    let value = serde_json::to_value(body).map_err(|e| io(&e))?;
    let sealed = Sealed { sha256: digest(&value), body: value };
    let text = serde_json::to_vec_pretty(&sealed).map_err(|e| io(&e))?;
    std::fs::write(path, text).map_err(|e| io(&e))
}

/// Reads a saved plan, refusing one whose seal does not match.
pub fn read(path: &Path) -> Result<Body, PlanFileError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PlanFileError::Io { path: shown.clone(), message: e.to_string() })?;
    let damaged = |message: String| PlanFileError::Damaged { path: shown.clone(), message };
    let sealed: Sealed = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if digest(&sealed.body) != sealed.sha256 {
        return Err(damaged("its SHA-256 does not match its contents: it was edited or damaged".into()));
    }
    let body: Body = serde_json::from_value(sealed.body).map_err(|e| damaged(e.to_string()))?;
    if body.format != FORMAT {
        return Err(damaged(format!("format {:?}, this byoc reads {FORMAT:?}", body.format)));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            format: FORMAT.into(),
            environment: "envs/prod".into(),
            commit: "0123".into(),
            revision: "main@sha1:0123".into(),
            kubernetes: true,
            observed: "ab".into(),
            plan: serde_json::json!({"steps": [{"id": "k8s.risingwave/a", "action": "update"}]}),
        }
    }

    #[test]
    fn a_written_plan_reads_back_and_any_edit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.json");
        write(&path, &body()).expect("write");
        assert_eq!(read(&path).expect("read"), body());
        let text = std::fs::read_to_string(&path).expect("text");
        std::fs::write(&path, text.replace("\"update\"", "\"delete\"")).expect("edit");
        assert!(matches!(read(&path), Err(PlanFileError::Damaged { .. })), "an edited step is refused");
        std::fs::write(&path, &text[..text.len() / 2]).expect("cut");
        assert!(matches!(read(&path), Err(PlanFileError::Damaged { .. })), "a truncated file is refused");
    }
}
