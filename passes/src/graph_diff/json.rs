//! The JSON rendering of a diff: the serialized [`ModelDiff`] plus whether the models are equal.

use super::model::ModelDiff;

impl ModelDiff {
    /// The diff as JSON: the serialized sections plus `"equal": bool`. Object keys are sorted.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("equal".to_owned(), serde_json::Value::Bool(self.is_empty()));
        }
        value
    }
}
