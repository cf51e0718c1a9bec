//! A searcher's settings: the `searcher.config` keys it reads, each declared once with its
//! description and default. Declare them as one struct with [`settings!`](crate::settings!)
//! (or implement [`Settings`] by hand where a default is not a constant); its
//! [`Settings::declare`] is [`Search::settings`](crate::search::Search::settings) and
//! [`Settings::parse`] reads the workflow's values in `new`.
//!
//! ```
//! use msh_plugin_sdk::prelude::*;
//!
//! msh_plugin_sdk::settings! {
//!     /// What a tournament searcher reads from `searcher.config`.
//!     struct Tournament {
//!         population_size: usize = 20 => "how many recent trials compete",
//!         explore: f64 = 0.1 => "chance of a random proposal",
//!     }
//! }
//!
//! let declared = Tournament::declare();
//! assert_eq!(declared[0].name, "population_size");
//! assert_eq!(declared[1].default, "0.1");
//!
//! let context = Context { seed: 1, budget: 0, config: vec![("explore".into(), "0.5".into())] };
//! let settings = Tournament::parse(&context).unwrap();
//! assert_eq!((settings.population_size, settings.explore), (20, 0.5));
//!
//! let typo = Context { config: vec![("explore".into(), "often".into())], ..context };
//! let error = Tournament::parse(&typo).unwrap_err();
//! assert_eq!(error, "setting `explore` is `often`, which is not a valid value");
//! ```

use std::str::FromStr;

use crate::types::{Context, Setting};

/// A setting declaration.
pub fn setting(name: &str, description: &str, default: impl ToString) -> Setting {
    Setting { name: name.into(), description: description.into(), default: default.to_string() }
}

/// Setting `key` from the workflow, or `default` when absent; an error names a value that
/// does not parse.
pub fn config<T: FromStr>(context: &Context, key: &str, default: T) -> Result<T, String> {
    match context.config.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v.trim().parse().map_err(|_| format!("setting `{key}` is `{v}`, which is not a valid value")),
    }
}

/// A searcher's settings as one value. [`read`](Settings::read) names each setting once,
/// with its description and default; the same code gives the declarations
/// ([`declare`](Settings::declare)) and the parsed values ([`parse`](Settings::parse)).
pub trait Settings: Sized {
    /// Reads every setting through `reader`, in the order they are declared.
    fn read(reader: &mut SettingReader) -> Result<Self, String>;

    /// The declarations, for [`Search::settings`](crate::search::Search::settings).
    fn declare() -> Vec<Setting> {
        let mut reader = SettingReader { context: None, declared: Vec::new() };
        // Declaring reads every default, which always succeeds; only the list is wanted.
        let _ = Self::read(&mut reader);
        reader.declared
    }

    /// The values a workflow sets, and the defaults of those it leaves out; an error names
    /// the first value that does not parse.
    fn parse(context: &Context) -> Result<Self, String> {
        Self::read(&mut SettingReader { context: Some(context), declared: Vec::new() })
    }
}

/// What [`Settings::read`] reads through: the declarations are collected, or the
/// workflow's values are parsed.
#[derive(Debug)]
pub struct SettingReader<'a> {
    context: Option<&'a Context>,
    declared: Vec<Setting>,
}

impl SettingReader<'_> {
    /// Setting `name`: its default when declaring, else the workflow's value or `default`.
    pub fn get<T: FromStr + ToString>(&mut self, name: &str, description: &str, default: T) -> Result<T, String> {
        match self.context {
            None => {
                self.declared.push(setting(name, description, default.to_string()));
                Ok(default)
            }
            Some(context) => config(context, name, default),
        }
    }
}

/// Declares a searcher's settings as a struct that implements [`Settings`]: one field per
/// setting, named as the `searcher.config` key, with its type, default and description.
///
/// ```
/// msh_plugin_sdk::settings! {
///     /// Beam search's settings.
///     pub struct BeamSettings {
///         beam_size: usize = 3 => "how many of the best trials are mutated",
///         grow: bool = true => "whether a mutation may add a block",
///     }
/// }
/// use msh_plugin_sdk::settings::Settings;
/// assert_eq!(BeamSettings::declare().len(), 2);
/// ```
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($field:ident: $ty:ty = $default:expr => $description:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            $(#[doc = $description] pub $field: $ty,)*
        }

        impl $crate::settings::Settings for $name {
            fn read(reader: &mut $crate::settings::SettingReader) -> ::std::result::Result<Self, ::std::string::String> {
                ::std::result::Result::Ok(Self {
                    $($field: reader.get::<$ty>(::std::stringify!($field), $description, $default)?,)*
                })
            }
        }
    };
}
