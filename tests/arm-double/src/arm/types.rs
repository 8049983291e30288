//! Per-type rules: what each resource provider checks on PUT and DELETE, and the read-only
//! fields it fills in.

use serde_json::Value;

use super::{Answer, Kind, Reply, Req, State};

impl State {
    /// Checks a PUT body for `kind` and fills in read-only properties.
    pub(super) fn validate(&mut self, _kind: &Kind, _id: &str, _key: &str, _name: &str, _body: &mut Value, _existing: Option<&Value>) -> Result<(), Reply> {
        Ok(())
    }

    /// Side effects of a stored PUT (children made with the parent).
    pub(super) fn after_put(&mut self, _kind: &Kind, _id: &str, _key: &str, _name: &str) -> Result<(), Reply> {
        Ok(())
    }

    /// Whether a resource may be deleted now.
    pub(super) fn check_delete(&self, _kind: &Kind, _key: &str) -> Result<(), Reply> {
        Ok(())
    }

    /// Role assignments and definitions at any scope.
    pub(super) fn authorization(&mut self, req: &Req, _scope: &[String], _rest: &[String], _lower: &[String]) -> Answer {
        Err(super::error(404, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path)))
    }
}
