//! The `InventoryRegion` field reference, rendered from the CRD's own OpenAPI schema
//! (`stockflow-operator crd-reference`; `scripts/generate.sh` writes it beside the CRD and
//! CI fails on drift): every field with its type, default, bounds and description.

use std::fmt::Write;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::InventoryRegion;

/// The reference as Markdown.
pub fn markdown() -> Result<String, serde_json::Error> {
    let crd = serde_json::to_value(InventoryRegion::crd())?;
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    let mut out = format!(
        "# `InventoryRegion` reference (`stockflow.dev/{}`)\n\n\
         Generated from the CRD's schema by `stockflow-operator crd-reference` \
         (`scripts/generate.sh` writes this file; CI fails when it is out of date).\n",
        version["name"].as_str().unwrap_or("v1alpha1")
    );
    for root in ["spec", "status"] {
        let _ = writeln!(out, "\n## `{root}`\n");
        rules(&mut out, &schema[root]);
        out.push_str("| field | type | default | constraints | description |\n| --- | --- | --- | --- | --- |\n");
        fields(&mut out, root, &schema[root]);
    }
    Ok(out)
}

/// The validation rules (CEL) of an object, as a list under its heading.
fn rules(out: &mut String, node: &Value) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "- Rule: `{}` ({})",
            rule["rule"].as_str().unwrap_or_default(),
            rule["message"].as_str().unwrap_or_default()
        );
    }
    if node["x-kubernetes-validations"].is_array() {
        out.push('\n');
    }
}

fn fields(out: &mut String, path: &str, node: &Value) {
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, field) in properties {
        let here = format!("{path}.{name}");
        let kind = match field["type"].as_str() {
            Some("array") => format!("[{}]", field["items"]["type"].as_str().unwrap_or("object")),
            Some(t) => t.to_string(),
            None if field["x-kubernetes-int-or-string"] == true => "int or string".into(),
            None => "object".into(),
        };
        let kind = if required.contains(&name.as_str()) {
            format!("{kind}, required")
        } else {
            kind
        };
        let default = if field["default"].is_null() {
            String::new()
        } else {
            format!("`{}`", field["default"])
        };
        let mut constraints = Vec::new();
        for (key, label) in [
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minLength", "length ≥"),
            ("maxLength", "length ≤"),
            ("minItems", "items ≥"),
            ("maxItems", "items ≤"),
        ] {
            if let Some(v) = field[key].as_f64() {
                constraints.push(format!("{label} {v}"));
            }
        }
        if let Some(p) = field["pattern"].as_str() {
            constraints.push(format!("pattern `{}`", p.replace('|', "\\|")));
        }
        if let Some(values) = field["enum"].as_array() {
            let values: Vec<String> = values
                .iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                .collect();
            constraints.push(format!("one of {}", values.join(", ")));
        }
        let description = field["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{here}` | {kind} | {default} | {} | {description} |",
            constraints.join("; ")
        );
        fields(out, &here, field);
        if field["type"] == "array" {
            fields(out, &format!("{here}[]"), &field["items"]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_spec_field_the_samples_use_is_documented() {
        let text = super::markdown().expect("renders");
        for field in [
            "spec.regionId",
            "spec.image",
            "spec.scylla.nodes",
            "spec.bus.kafka.brokers",
            "spec.tls.principalsSecret.name",
            "spec.insecureNoAuth",
            "status.conditions[].type",
        ] {
            assert!(text.contains(&format!("`{field}`")), "{field} missing");
        }
    }
}
