//! The committed `openrpc.json` is what the code generates, and it is a
//! valid OpenRPC 1.x document.
//!
//! `openrpc-meta-schema.json` is the schema of the npm package
//! `@open-rpc/meta-schema` 1.14.9 (Apache-2.0, github.com/open-rpc/meta-schema),
//! and `json-schema-tools-meta-schema.json`, which it refers to for every
//! embedded JSON Schema, is `schema.json` of `@json-schema-tools/meta-schema`
//! 1.8.0 (Apache-2.0). Both are vendored so that the test never downloads.

use p2pstore_rpc::openrpc;
use serde_json::Value;

const META_SCHEMA: &str = include_str!("openrpc-meta-schema.json");
const JSON_SCHEMA_META: &str = include_str!("json-schema-tools-meta-schema.json");

#[test]
fn committed_document_is_generated() {
    let generated = openrpc::document_json();
    assert!(
        generated == p2pstore_rpc::OPENRPC_JSON,
        "rpc-spec/openrpc.json is stale: run `{}` and commit the result",
        openrpc::REGENERATE
    );
}

#[test]
fn document_is_valid_openrpc() {
    let meta: Value = serde_json::from_str(META_SCHEMA).unwrap();
    let json_schema: Value = serde_json::from_str(JSON_SCHEMA_META).unwrap();
    let registry = jsonschema::Registry::new()
        .add("https://meta.json-schema.tools", json_schema)
        .unwrap()
        .prepare()
        .unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_registry(&registry)
        .offline()
        .build(&meta)
        .unwrap();
    let doc = openrpc::document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not valid OpenRPC: {errors:#?}");
    // The meta-schema accepts this version: it lists every released one.
    assert_eq!(doc["openrpc"], openrpc::OPENRPC_VERSION);
}

/// Every `$ref` in the document points at a schema it defines.
#[test]
fn refs_resolve() {
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    refs.push(r.clone());
                }
                m.values().for_each(|v| walk(v, refs));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let doc = openrpc::document();
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} does not point into components.schemas"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} is not defined"
        );
    }
}

/// The enums' schemas list exactly their wire strings.
#[test]
fn enum_schemas_match_wire_form() {
    let doc = openrpc::document();
    let schemas = &doc["components"]["schemas"];
    fn check<T: serde::Serialize + Copy + std::fmt::Display>(schema: &Value, all: &[T]) {
        // schemars writes `enum`, or `oneOf` of `const`s when the variants
        // carry docs.
        let listed: Vec<String> = match schema.get("enum") {
            Some(e) => e.as_array().unwrap().clone(),
            None => schema["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["const"].clone())
                .collect(),
        }
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
        let wire: Vec<String> = all
            .iter()
            .map(|v| {
                let s = serde_json::to_value(v).unwrap();
                assert_eq!(s.as_str().unwrap(), v.to_string());
                v.to_string()
            })
            .collect();
        assert_eq!(listed, wire);
    }
    check(&schemas["NodeState"], p2pstore_rpc::NodeState::ALL);
    check(&schemas["NodeRole"], p2pstore_rpc::NodeRole::ALL);
    check(&schemas["ContractRole"], p2pstore_rpc::ContractRole::ALL);
    check(&schemas["ContractState"], p2pstore_rpc::ContractState::ALL);
}
