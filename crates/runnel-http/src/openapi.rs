//! The OpenAPI 3.0 description of the HTTP API. A test checks it names exactly the
//! routes the router serves (`api::ROUTES`), and that each of them answers.

use serde_json::{Map, Value, json};

use crate::api::ROUTES;

fn path_param(name: &str, kind: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": kind}})
}

fn operation(method: &str, path: &str) -> Value {
    let topic = path_param("topic", "string", "The topic.");
    let partition_max = runnel_log::config::PARTITIONS_MAX - 1;
    let error = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"type": "object"}}}});
    match (method, path) {
        ("get", "/health/live") => {
            json!({"summary": "The process answers", "responses": {"200": ok("Live")}})
        }
        ("get", "/health/ready") => {
            json!({"summary": "The broker serves Kafka requests", "responses": {"200": ok("Ready"), "503": error}})
        }
        ("get", "/metrics") => {
            json!({"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}})
        }
        ("get", "/api/v1/overview") => {
            json!({"summary": "The broker at a glance: version, uptime, data directory, disk used, connections, counts, and totals in and out since start", "responses": {"200": ok("Overview")}})
        }
        ("post", "/api/v1/topics/{topic}/config") => json!({
            "summary": "Change a topic's settings: set some, return others to the default",
            "parameters": [topic],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConfigChange"}}}},
            "responses": {"200": ok("The topic"), "400": error, "404": error, "413": error, "415": error, "422": error}
        }),
        ("get", "/api/v1/services") => {
            json!({"summary": "Services built with the toolkit, as their instances state their status on runnel.services, with their dead-letter counts", "responses": {"200": ok("Services")}})
        }
        ("post", "/api/v1/services/{service}/dead-letters/replay") => json!({
            "summary": "Publish a dead letter again to the topic it came from",
            "parameters": [path_param("service", "string", "The service.")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Replay"}}}},
            "responses": {"200": ok("Where it was published"), "400": error, "404": error, "413": error, "415": error, "422": error}
        }),
        ("get", "/") => {
            json!({"summary": "The web console", "responses": {"200": {"description": "The console's page", "content": {"text/html": {"schema": {"type": "string"}}}}}})
        }
        ("get", "/console.js") => {
            json!({"summary": "The web console's script", "responses": {"200": {"description": "JavaScript", "content": {"text/javascript": {"schema": {"type": "string"}}}}}})
        }
        ("get", "/console.css") => {
            json!({"summary": "The web console's style sheet", "responses": {"200": {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}}}})
        }
        ("get", "/api/v1/openapi.json") => {
            json!({"summary": "This description", "responses": {"200": ok("OpenAPI 3.0")}})
        }
        ("get", "/api/v1/topics") => {
            json!({"summary": "List topics", "responses": {"200": ok("Topics")}})
        }
        ("post", "/api/v1/topics") => json!({
            "summary": "Create a topic",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewTopic"}}}},
            "responses": {"201": ok("The topic"), "400": error, "409": error, "413": error, "415": error, "422": error}
        }),
        ("get", "/api/v1/topics/{topic}") => {
            json!({"summary": "Describe a topic", "parameters": [topic], "responses": {"200": ok("Partitions, offsets, settings"), "404": error}})
        }
        ("delete", "/api/v1/topics/{topic}") => {
            json!({"summary": "Delete a topic", "parameters": [topic], "responses": {"204": {"description": "Deleted"}, "400": error, "404": error}})
        }
        ("post", "/api/v1/topics/{topic}/records") => json!({
            "summary": "Produce records",
            "parameters": [topic],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Produce"}}}},
            "responses": {"200": ok("The offset of each record"), "400": error, "404": error, "413": error, "415": error, "422": error}
        }),
        ("get", "/api/v1/topics/{topic}/partitions/{partition}/records") => json!({
            "summary": "Read records of a partition",
            "parameters": [
                topic,
                {"name": "partition", "in": "path", "required": true, "description": "The partition.", "schema": {"type": "integer", "minimum": 0, "maximum": partition_max}},
                {"name": "offset", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": i64::MAX}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": crate::RECORDS_LIMIT_MAX}},
                {"name": "from", "in": "query", "required": false, "description": "Without an offset: oldest (the default) or newest (the last `limit` records)", "schema": {"type": "string", "enum": ["oldest", "newest"]}},
                {"name": "timestamp", "in": "query", "required": false, "description": "Without an offset: start at the first batch with a record at or after this time (ms since the epoch)", "schema": {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}}
            ],
            "responses": {"200": ok("Records, the next offset and the high watermark"), "400": error, "404": error}
        }),
        ("get", "/api/v1/topics/{topic}/tail") => json!({
            "summary": "Live tail of a topic as server-sent events (event: record)",
            "parameters": [
                topic,
                {"name": "partition", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": partition_max}},
                {"name": "from", "in": "query", "required": false, "schema": {"type": "string", "default": "latest", "pattern": "^(latest|earliest|[0-9]{1,18})$"}, "description": "latest, earliest, or an offset (with partition)"}
            ],
            "responses": {"200": {"description": "A stream of events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "400": error, "404": error, "503": error}
        }),
        ("get", "/api/v1/groups") => {
            json!({"summary": "List consumer groups", "responses": {"200": ok("Groups")}})
        }
        ("delete", "/api/v1/groups/{group}") => json!({
            "summary": "Delete a group without members, and its committed offsets",
            "parameters": [path_param("group", "string", "The group.")],
            "responses": {"204": {"description": "Deleted"}, "404": error, "409": error}
        }),
        ("post", "/api/v1/groups/{group}/offsets") => json!({
            "summary": "Reset a group's committed offsets on a topic (the group must have no members unless dry_run)",
            "parameters": [path_param("group", "string", "The group.")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Reset"}}}},
            "responses": {"200": ok("Each partition's committed offset before and after"), "400": error, "404": error, "409": error, "413": error, "415": error, "422": error}
        }),
        ("get", "/api/v1/groups/{group}") => json!({
            "summary": "Describe a consumer group",
            "parameters": [path_param("group", "string", "The group.")],
            "responses": {"200": ok("Members, assignments, committed offsets and lag"), "404": error}
        }),
        _ => json!({"summary": path, "responses": {"200": ok("OK")}}),
    }
}

/// Topic settings: the keys the log knows, each a string (whose value the log checks).
fn config_schema() -> Value {
    let keys: Map<String, Value> = runnel_log::TopicConfig::default()
        .entries()
        .into_iter()
        .map(|(k, _)| (k.to_string(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "additionalProperties": false, "properties": keys})
}

/// The OpenAPI document.
#[must_use]
pub fn openapi() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (method, path) in ROUTES {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(method.to_string(), operation(method, path));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Runnel HTTP API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "code"], "properties": {
                "error": {"type": "string"}, "code": {"type": "string"}}},
            "NewTopic": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9._-]*[a-zA-Z0-9_-][a-zA-Z0-9._-]*$", "maxLength": 249},
                "partitions": {"type": "integer", "nullable": true, "minimum": 1, "maximum": runnel_log::config::PARTITIONS_MAX},
                "config": config_schema()}},
            "ConfigChange": {"type": "object", "additionalProperties": false, "properties": {
                "set": config_schema(),
                "remove": {"type": "array", "items": {"type": "string"}}}},
            "Replay": {"type": "object", "required": ["partition", "offset"], "additionalProperties": false, "properties": {
                "partition": {"type": "integer", "minimum": 0, "maximum": runnel_log::config::PARTITIONS_MAX - 1},
                "offset": {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}}},
            "Reset": {"type": "object", "required": ["topic", "to"], "additionalProperties": false, "properties": {
                "topic": {"type": "string"},
                "to": {"type": "string", "enum": ["earliest", "latest", "offset", "timestamp"]},
                "value": {"type": "integer", "nullable": true, "minimum": i64::MIN, "maximum": i64::MAX},
                "dry_run": {"type": "boolean"}}},
            "Produce": {"type": "object", "required": ["records"], "additionalProperties": false, "properties": {
                "records": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": false, "properties": {
                    "key": {"type": "string", "nullable": true},
                    "value": {"type": "string", "nullable": true},
                    "partition": {"type": "integer", "nullable": true, "minimum": 0, "maximum": runnel_log::config::PARTITIONS_MAX - 1},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}
        }}
    })
}
