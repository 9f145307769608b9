//! What every operation can answer besides its own responses, added to the OpenAPI
//! document in one place so that no operation forgets one: a malformed request (400),
//! a missing or refused credential (401, 403) where the operation takes one, an unknown
//! id (404) where the path names one, a stale `If-Match` (412) where the operation takes
//! it, a body too large, of the wrong type or invalid (413, 415, 422) where it takes one,
//! a rate limit (429) and an unavailable database (503). All as problem+json.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayItems, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

/// Request fields holding lists of permission keys (`resource:action:scope`).
const PERMISSION_LISTS: [(&str, &str); 3] = [
    ("CreateRole", "permissions"),
    ("UpdateRolePermissions", "add"),
    ("UpdateRolePermissions", "remove"),
];

/// What a permission key looks like (`domain::authz::PermissionKey::parse`).
pub const PERMISSION_PATTERN: &str =
    "^[a-z][a-z0-9_-]{0,63}:[a-z][a-z0-9_-]{0,63}:(own|department|all)$";

/// A single-line text (`domain::values` `text`): something besides spaces, no control
/// characters.
const TEXT: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";
/// `domain::tenants::TenantSlug`.
const SLUG: &str = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$";
/// `domain::values::Email`, in ASCII: `local@domain`, the domain with a dot, no quoted
/// local part, no IP literal.
const EMAIL: &str = r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";

/// The domain value rules of request fields, by field name: (field, pattern, at most
/// this many characters). Applied to every request body's schema, so that a new request
/// type with such a field states them without repeating them.
const FIELD_RULES: [(&str, &str, usize); 4] = [
    ("display_name", TEXT, 200),
    ("full_name", TEXT, 200),
    ("slug", SLUG, 63),
    ("email", EMAIL, 254),
];

/// Free-form objects of request bodies (`domain::values::JsonObject`): at most 100 keys of
/// 1–64 characters (and at most 16 KiB as JSON, which a schema cannot state).
const OBJECT_FIELDS: [&str; 2] = ["settings", "custom_attributes"];

/// No string may hold U+0000 (`extract`: no backend stores it); said of every string
/// field and query parameter that has no pattern of its own.
const NO_NUL: &str = "^[^\\x00]*$";

/// Adds the common responses to every operation of `doc` that does not state them, and
/// the constraints that field annotations cannot carry: list items, and the domain value
/// rules of request fields.
pub fn complete(doc: &mut OpenApi) {
    let bodies = request_body_schemas(doc);
    if let Some(components) = doc.components.as_mut() {
        for name in &bodies {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
                continue;
            };
            for field in OBJECT_FIELDS {
                if let Some(RefOr::T(Schema::Object(f))) = object.properties.get_mut(field) {
                    f.max_properties = Some(100);
                    f.property_names = Some(Box::new(Schema::Object(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(64))
                            .build(),
                    )));
                }
            }
            for (field, pattern, max) in FIELD_RULES {
                if let Some(RefOr::T(Schema::Object(f))) = object.properties.get_mut(field) {
                    f.pattern = Some(pattern.to_owned());
                    f.max_length = Some(max);
                }
            }
            for property in object.properties.values_mut() {
                if let RefOr::T(Schema::Object(f)) = property {
                    bar_nul(f);
                }
            }
        }
        for (schema, field) in PERMISSION_LISTS {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) else {
                continue;
            };
            if let Some(RefOr::T(Schema::Array(list))) = object.properties.get_mut(field) {
                if let ArrayItems::RefOrSchema(item) = &mut list.items {
                    if let RefOr::T(Schema::Object(item)) = item.as_mut() {
                        item.pattern = Some(PERMISSION_PATTERN.to_owned());
                    }
                }
            }
        }
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let names_an_entity = path.contains('{');
        for op in operations(item) {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let if_match = op.parameters.iter().flatten().any(|p| {
                p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("if-match")
            });
            for p in op.parameters.iter_mut().flatten() {
                if p.parameter_in == ParameterIn::Query {
                    if let Some(RefOr::T(Schema::Object(s))) = p.schema.as_mut() {
                        bar_nul(s);
                    }
                }
            }
            let takes_input = has_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let mut add = |status: &str, description: &str, when: bool| {
                if when {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                }
            };
            add(
                "400",
                "Malformed request: unreadable JSON, or an invalid query parameter or header",
                true,
            );
            add("401", "No valid credential", secured);
            add("403", "The credential does not allow this", secured);
            add(
                "404",
                "No such entity in the caller's tenant (an id that is not a UUID names none)",
                names_an_entity,
            );
            add(
                "412",
                "If-Match names a version that is not current",
                if_match,
            );
            add("413", "The body exceeds the configured limit", has_body);
            add("415", "The body is not JSON", has_body);
            add("422", "Invalid fields; `errors` names each", takes_input);
            add(
                "429",
                "Too many requests; retry after `Retry-After` seconds",
                true,
            );
            add("503", "The database is unavailable or the server is busy; retry after `Retry-After` seconds", true);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// The names of the component schemas that request bodies refer to.
fn request_body_schemas(doc: &OpenApi) -> Vec<String> {
    let mut names = Vec::new();
    for item in doc.paths.paths.values() {
        let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
        for op in ops.into_iter().flatten() {
            let contents = op.request_body.iter().flat_map(|b| b.content.values());
            for content in contents {
                if let Some(RefOr::Ref(r)) = &content.schema {
                    if let Some(name) = r.ref_location.strip_prefix("#/components/schemas/") {
                        names.push(name.to_owned());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Gives a free string (no pattern, format or enum of its own) the [`NO_NUL`] pattern.
fn bar_nul(s: &mut Object) {
    let string = match &s.schema_type {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    };
    if string && s.pattern.is_none() && s.format.is_none() && s.enum_values.is_none() {
        s.pattern = Some(NO_NUL.to_owned());
    }
}
