//! The reference docs that the code can write: `docs/CONFIGURATION.md` from the CLI's own flags
//! (clap), `docs/API.md` from the OpenAPI document (utoipa). Each file holds a generated part
//! between markers; the tests fail when it differs from what the code says now. To write them
//! again after a change: `CITYSTREAM_WRITE_DOCS=1 cargo test --test tests docs::`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

const BEGIN: &str = "<!-- generated from the code: do not edit by hand -->";
const END: &str = "<!-- end of the generated part -->";

/// Checks (or, with `CITYSTREAM_WRITE_DOCS=1`, writes) the generated part of `file`.
fn check_generated(file: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{file} has no generated part between {BEGIN} and {END}");
    };
    let head = &text[..begin + BEGIN.len()];
    let tail = &text[end..];
    let wanted = format!("{head}\n\n{generated}\n{tail}");
    if std::env::var_os("CITYSTREAM_WRITE_DOCS").is_some() {
        std::fs::write(&path, &wanted).expect("write the docs");
        return;
    }
    assert!(
        text == wanted,
        "{file} no longer says what the code does; write it again with \
         `CITYSTREAM_WRITE_DOCS=1 cargo test --test tests docs::` and read the diff"
    );
}

/// A table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[test]
fn the_configuration_reference_is_the_clis_own() {
    let cli = citystream::config::Cli::command();
    // Each flag once, with the commands it applies to, in the order `up` shows them.
    let mut flags: Vec<(String, clap::Arg)> = Vec::new();
    let mut used_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let commands = std::iter::once(&cli).chain(cli.get_subcommands());
    for command in commands {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let name = format!("--{long}");
            let commands = used_by.entry(name.clone()).or_default();
            if commands.is_empty() {
                flags.push((name, arg.clone()));
            }
            // A global flag (the root command's) applies to every command.
            commands.push(match command.get_name() {
                root if root == cli.get_name() => "all".to_owned(),
                name => name.to_owned(),
            });
        }
    }
    let mut out = String::from(
        "| Flag | Environment | Default | Commands | What it sets |\n|---|---|---|---|---|\n",
    );
    for (name, arg) in &flags {
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match default.as_slice() {
            [] => String::new(),
            values => format!("`{}`", values.join(",")),
        };
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set() && arg.get_action().takes_values())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let help = match values.as_slice() {
            [] => help,
            values => format!("{help} One of {}.", values.join(", ")),
        };
        let commands = used_by[name].join(", ");
        writeln!(
            out,
            "| `{name}` | {env} | {default} | {commands} | {} |",
            cell(&help)
        )
        .expect("write");
    }
    check_generated("docs/CONFIGURATION.md", &out);
}

/// A schema's type as a reader wants it: `string` (date-time), `[Window]`, `integer, 1..1000`.
fn type_of(schema: &Value) -> String {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.rsplit('/').next().unwrap_or(name);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(all) = schema["oneOf"].as_array().or(schema["allOf"].as_array()) {
        let null = |s: &&Value| s["type"] == "null";
        let kinds: Vec<String> = all.iter().filter(|s| !null(s)).map(type_of).collect();
        let nullable = if all.iter().any(|s| null(&s)) {
            " or null"
        } else {
            ""
        };
        return format!("{}{nullable}", kinds.join(" or "));
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut kind = kinds
        .iter()
        .filter(|k| **k != "null")
        .copied()
        .collect::<Vec<_>>()
        .join(" or ");
    if kind == "array" {
        kind = format!("list of {}", type_of(&schema["items"]));
    }
    if kind == "object" && schema["additionalProperties"].is_object() {
        kind = format!("map to {}", type_of(&schema["additionalProperties"]));
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect();
        kind = format!("one of {}", values.join(", "));
    }
    if let Some(format) = schema["format"].as_str() {
        kind = format!("{kind} ({format})");
    }
    match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
        (Some(lo), Some(hi)) => kind = format!("{kind}, {lo}..{hi}"),
        (Some(lo), None) => kind = format!("{kind}, ≥ {lo}"),
        _ => {}
    }
    if kinds.contains(&"null") {
        kind = format!("{kind} or null");
    }
    kind
}

/// The fields of an object schema, with those of the schemas it is made of (`allOf`, as a
/// flattened part is), and which of them are required.
fn fields<'a>(
    schema: &'a Value,
    schemas: &'a serde_json::Map<String, Value>,
) -> (BTreeMap<&'a str, &'a Value>, Vec<&'a str>) {
    let mut properties = BTreeMap::new();
    let mut required = Vec::new();
    let parts: Vec<&Value> = match schema["allOf"].as_array() {
        Some(all) => all.iter().collect(),
        None => vec![schema],
    };
    for part in parts {
        let part = match part["$ref"].as_str() {
            Some(name) => &schemas[name.rsplit('/').next().unwrap_or(name)],
            None => part,
        };
        if let Some(props) = part["properties"].as_object() {
            properties.extend(props.iter().map(|(k, v)| (k.as_str(), v)));
        }
        if let Some(r) = part["required"].as_array() {
            required.extend(r.iter().filter_map(Value::as_str));
        }
    }
    (properties, required)
}

#[test]
fn the_api_reference_is_the_openapi_document() {
    let doc = serde_json::to_value(citystream::api::doc::document()).expect("document");
    let mut out = String::from("## Endpoints\n");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            writeln!(out, "\n### `{} {path}`\n", method.to_uppercase()).expect("write");
            let about = op["description"]
                .as_str()
                .or(op["summary"].as_str())
                .unwrap_or("");
            writeln!(out, "{}\n", about.trim()).expect("write");
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                out.push_str("| Parameter | In | Type | What |\n|---|---|---|---|\n");
                for p in params {
                    let required = if p["required"] == true {
                        " (required)"
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "| `{}`{required} | {} | {} | {} |",
                        p["name"].as_str().unwrap_or("?"),
                        p["in"].as_str().unwrap_or("?"),
                        cell(&type_of(&p["schema"])),
                        cell(p["description"].as_str().unwrap_or(""))
                    )
                    .expect("write");
                }
                out.push('\n');
            }
            out.push_str("| Status | Body | When |\n|---|---|---|\n");
            for (status, response) in op["responses"].as_object().expect("responses") {
                let (kind, schema) = response["content"]
                    .as_object()
                    .and_then(|c| c.iter().next())
                    .map(|(k, v)| (k.as_str(), &v["schema"]))
                    .unwrap_or(("", &Value::Null));
                let body = match schema {
                    Value::Null => String::new(),
                    s => format!("{} (`{kind}`)", type_of(s)),
                };
                writeln!(
                    out,
                    "| {status} | {} | {} |",
                    cell(&body),
                    cell(response["description"].as_str().unwrap_or(""))
                )
                .expect("write");
            }
        }
    }
    out.push_str("\n## Bodies\n");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        writeln!(out, "\n### {name}\n").expect("write");
        if let Some(about) = schema["description"].as_str() {
            writeln!(out, "{}\n", cell(about)).expect("write");
        }
        let (properties, required) = fields(schema, schemas);
        if properties.is_empty() {
            writeln!(out, "{}", cell(&type_of(schema))).expect("write");
            continue;
        }
        out.push_str("| Field | Type | What |\n|---|---|---|\n");
        for (field, property) in properties {
            let optional = if required.contains(&field) {
                ""
            } else {
                " (optional)"
            };
            let about = property["description"]
                .as_str()
                .or(property["oneOf"][0]["description"].as_str())
                .unwrap_or("");
            writeln!(
                out,
                "| `{field}`{optional} | {} | {} |",
                cell(&type_of(property)),
                cell(about)
            )
            .expect("write");
        }
    }
    check_generated("docs/API.md", &out);
}
