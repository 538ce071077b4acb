//! The OpenRPC document, generated from the API definition in `lib.rs`:
//! method names, docs, params and results come from the `api!` invocation
//! that also declares the jsonrpsee trait, and the schemas come from the
//! Rust types through schemars. `openrpc.json` is this module's output,
//! committed so that readers and `rpc.discover` see it without a build.

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::codes;

/// The OpenRPC version the document declares.
pub const OPENRPC_VERSION: &str = "1.2.6";

/// The command that rewrites `openrpc.json` from the code.
pub const REGENERATE: &str = "cargo run -p p2pstore-rpc --example gen-openrpc";

/// Where schemas live in the document; every `$ref` points here.
const SCHEMAS_PATH: &str = "/components/schemas";

/// One RPC method as the document describes it.
pub struct Method {
    pub name: &'static str,
    /// The method's doc comment, one entry per line.
    pub doc: &'static [&'static str],
    pub params: Vec<Param>,
    pub result: Schema,
}

/// One named parameter of a method.
pub struct Param {
    pub name: &'static str,
    pub required: bool,
    pub schema: Schema,
}

/// A type an RPC method takes as a parameter. Whether the parameter may be
/// left out is spelled out per type, so a new parameter type fails to
/// compile until someone decides; jsonrpsee treats exactly the `Option`
/// params as optional, and so does this.
pub trait RpcParam: JsonSchema {
    const REQUIRED: bool;
}

impl RpcParam for String {
    const REQUIRED: bool = true;
}

impl RpcParam for u64 {
    const REQUIRED: bool = true;
}

impl<T: JsonSchema> RpcParam for Option<T> {
    const REQUIRED: bool = false;
}

impl Param {
    /// The param `name` of type `T`, its schema registered in `generator`.
    /// An optional param keeps its nullable schema: clients (ours too) may
    /// send an explicit `null` for it.
    pub fn of<T: RpcParam>(name: &'static str, generator: &mut SchemaGenerator) -> Param {
        Param {
            name,
            required: T::REQUIRED,
            schema: generator.subschema_for::<T>(),
        }
    }
}

/// A schema generator whose `$ref`s point into `components.schemas`.
/// Draft 7 because the OpenRPC meta-schema describes draft-7 schemas; the
/// serialize contract because most types are results, and it marks
/// `Option` fields as present-but-nullable, which is what serde writes.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = SCHEMAS_PATH.into();
            s.meta_schema = None;
            s.contract = Contract::Serialize;
        })
        .into_generator()
}

/// Every method of the API, in the trait's order, with the definitions
/// their schemas refer to.
pub fn methods() -> (Vec<Method>, Map<String, Value>) {
    let mut generator = generator();
    let mut methods = crate::api_methods(&mut generator);
    methods.extend(crate::event_methods(&mut generator));
    (methods, generator.take_definitions(true))
}

/// Joins doc-comment lines into text: lines of a paragraph with spaces,
/// paragraphs with a blank line.
fn doc_text(lines: &[&str]) -> String {
    let mut paragraphs: Vec<String> = vec![String::new()];
    for line in lines.iter().map(|l| l.trim()) {
        match paragraphs.last_mut() {
            _ if line.is_empty() => paragraphs.push(String::new()),
            Some(p) if p.is_empty() => p.push_str(line),
            Some(p) => {
                p.push(' ');
                p.push_str(line);
            }
            None => paragraphs.push(line.to_string()),
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs.join("\n\n")
}

/// The whole OpenRPC document.
pub fn document() -> Value {
    let (methods, schemas) = methods();
    let methods: Vec<Value> = methods
        .into_iter()
        .map(|m| {
            let params: Vec<Value> = m
                .params
                .into_iter()
                .map(|p| json!({ "name": p.name, "required": p.required, "schema": p.schema }))
                .collect();
            json!({
                "name": m.name,
                "summary": doc_text(m.doc),
                "params": params,
                "result": { "name": format!("{}_result", m.name), "schema": m.result },
                "paramStructure": "either",
            })
        })
        .collect();
    let errors: Map<String, Value> = codes::ALL
        .iter()
        .map(|(code, name)| {
            let message = name.replace('_', " ").to_lowercase();
            (
                name.to_string(),
                json!({ "code": code, "message": message }),
            )
        })
        .collect();
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "p2pstored JSON-RPC",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control API of the p2pstore daemon. HTTP and WebSocket on one port \
                (127.0.0.1 by default). Every request needs `Authorization: Bearer <token>` with \
                the token from `<datadir>/.cookie`; without it the server answers HTTP 401. \
                Amounts are integer sats in fields ending `_sat`.",
        },
        "methods": methods,
        "components": { "schemas": schemas, "errors": errors },
    })
}

/// The document as `openrpc.json` holds it: two-space indent, final newline.
pub fn document_json() -> String {
    // Serializing a `Value` cannot fail: its keys are strings.
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
