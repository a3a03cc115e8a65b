//! `--boot-config FILE.json`: the JSON the `bootloader` crate's `BootConfig` serialises to (its
//! `boot.json`), read into the library's `RuntimeBootConfig`.

use mote_host::RuntimeBootConfig;
use serde_json::{Map, Value};

/// The bootloader's log levels, in its `BootConfig`'s JSON spelling.
const LOG_LEVELS: [&str; 6] = ["Off", "Error", "Warn", "Info", "Debug", "Trace"];

/// The fields of the bootloader's `BootConfig`, as its JSON names them.
const FIELDS: [&str; 5] = [
    "frame_buffer",
    "log_level",
    "frame_buffer_logging",
    "serial_logging",
    "_test_sentinel",
];

/// A boot config that cannot be read: the field that is wrong (`frame_buffer.x` for a nested
/// one, `(the document)` for the whole) and why.
#[derive(Debug)]
pub struct BadField {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for BadField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boot config: field `{}`: {}", self.field, self.problem)
    }
}

/// Reads the JSON the bootloader crate's `BootConfig` serialises to. Every field may be left
/// out (it then has the bootloader's default, as its `#[serde(default)]` reads it); a field
/// of the wrong type and an unknown field are refused, naming the field.
pub fn from_json(text: &str) -> Result<RuntimeBootConfig, BadField> {
    let problem = |field: &str, problem: String| BadField {
        field: field.to_owned(),
        problem,
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| problem("(the document)", format!("not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(problem(
            "(the document)",
            "must be a JSON object, as BootConfig serialises".into(),
        ));
    };
    let mut config = RuntimeBootConfig::default();
    for (key, value) in &object {
        match key.as_str() {
            "frame_buffer" => {
                let frame_buffer = match value {
                    Value::Object(fields) => fields,
                    Value::Null => continue,
                    _ => return Err(problem(key, format!("{value} is not an object"))),
                };
                (
                    config.minimum_framebuffer_width,
                    config.minimum_framebuffer_height,
                ) = read_frame_buffer(frame_buffer).map_err(|(field, message)| {
                    problem(&format!("frame_buffer.{field}"), message)
                })?;
            }
            "log_level" => match value.as_str() {
                Some(level) if LOG_LEVELS.contains(&level) => config.log_level = level.into(),
                _ => {
                    return Err(problem(
                        key,
                        format!("{value} is not one of {}", LOG_LEVELS.join(", ")),
                    ));
                }
            },
            "frame_buffer_logging" | "serial_logging" => {
                let Some(on) = value.as_bool() else {
                    return Err(problem(key, format!("{value} is not true or false")));
                };
                if key == "serial_logging" {
                    config.serial_logging = on;
                } else {
                    config.frame_buffer_logging = on;
                }
            }
            "_test_sentinel" => {
                config.test_sentinel = value.as_u64().ok_or_else(|| {
                    problem(key, format!("{value} is not an unsigned 64-bit integer"))
                })?;
            }
            _ => {
                return Err(problem(
                    key,
                    format!("unknown field (BootConfig has {})", FIELDS.join(", ")),
                ));
            }
        }
    }
    Ok(config)
}

/// `frame_buffer`'s two fields, or the field that is wrong and why.
#[allow(clippy::type_complexity)]
fn read_frame_buffer(
    fields: &Map<String, Value>,
) -> Result<(Option<u64>, Option<u64>), (String, String)> {
    let (mut width, mut height) = (None, None);
    for (key, value) in fields {
        let slot = match key.as_str() {
            "minimum_framebuffer_width" => &mut width,
            "minimum_framebuffer_height" => &mut height,
            _ => {
                return Err((
                    key.clone(),
                    "unknown field (frame_buffer has minimum_framebuffer_height, \
                     minimum_framebuffer_width)"
                        .into(),
                ));
            }
        };
        *slot = match value {
            Value::Null => None,
            _ => Some(value.as_u64().ok_or_else(|| {
                (
                    key.clone(),
                    format!("{value} is not null or a number of pixels"),
                )
            })?),
        };
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootloaders_own_serialisation_reads_back() {
        // What `serde_json::to_string(&BootConfig)` writes for the custom_config test.
        let text = r#"{"frame_buffer":{"minimum_framebuffer_height":null,
            "minimum_framebuffer_width":null},"log_level":"Trace","frame_buffer_logging":false,
            "serial_logging":true,"_test_sentinel":193521294356481}"#;
        let config = from_json(text).unwrap();
        assert_eq!(config.test_sentinel, 0xb001b001b001);
        assert!(!config.frame_buffer_logging && config.serial_logging);
        assert_eq!(config.minimum_framebuffer_width, None);
        assert_eq!(from_json("{}").unwrap(), RuntimeBootConfig::default());
        let config =
            from_json(r#"{"frame_buffer":{"minimum_framebuffer_width":800},"log_level":"Off"}"#)
                .unwrap();
        assert_eq!(config.minimum_framebuffer_width, Some(800));
        assert_eq!(config.minimum_framebuffer_height, None);
        assert_eq!(config.log_level, "Off");
    }

    #[test]
    fn a_bad_field_is_named() {
        let field_of = |text: &str| match from_json(text) {
            Err(bad) => bad.field,
            Ok(config) => panic!("{text}: {config:?}"),
        };
        assert_eq!(field_of(r#"{"log_level":"Loud"}"#), "log_level");
        assert_eq!(field_of(r#"{"serial_logging":1}"#), "serial_logging");
        assert_eq!(field_of(r#"{"_test_sentinel":-1}"#), "_test_sentinel");
        assert_eq!(field_of(r#"{"_test_sentinal":1}"#), "_test_sentinal");
        assert_eq!(
            field_of(r#"{"frame_buffer":{"minimum_framebuffer_width":"wide"}}"#),
            "frame_buffer.minimum_framebuffer_width"
        );
        assert_eq!(field_of("[1]"), "(the document)");
        assert_eq!(field_of("{"), "(the document)");
        let error = from_json(r#"{"log_level":"Loud"}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("boot config: field `log_level`"),
            "{error}"
        );
    }
}
