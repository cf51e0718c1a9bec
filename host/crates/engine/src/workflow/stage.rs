//! The stages of a workflow as a typed enum: each kind has its own settings, and a
//! setting of another kind is refused while parsing, where the key is (`kind` is read
//! first, then the rest of the map into that kind's settings).

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Budget, EnsembleMethod, ExportFormat, SearcherSpec};

/// One node of the DAG: the stages it needs, and what it does.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Stages that must finish first.
    pub needs: Vec<String>,
    #[serde(flatten)]
    pub work: StageWork,
}

/// What a stage does, with the settings of its kind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageWork {
    /// Ask the searcher, train, record; until the budget is spent.
    Search(SearchStage),
    /// Train the best architecture on train + validation for longer.
    Retrain(RetrainStage),
    /// Combine the best trials of a search into one model.
    Ensemble(EnsembleStage),
    /// Train a student from the best model.
    Distill(DistillStage),
    /// Write the best model to a directory.
    Export(ExportStage),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchStage {
    /// Overrides the workflow's searcher.
    #[serde(default)]
    pub searcher: Option<SearcherSpec>,
    /// Overrides the workflow's budget.
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainStage {
    /// Epochs to train [default: twice the trial's].
    #[serde(default)]
    pub epochs: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleStage {
    /// How members are chosen and weighted.
    #[serde(default)]
    pub method: Option<EnsembleMethod>,
    /// How many of the best trials are candidates.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// non_adaptive: members per group.
    #[serde(default)]
    pub width: Option<usize>,
    /// non_adaptive: only the first `pool` trials are candidates.
    #[serde(default)]
    pub pool: Option<usize>,
    /// adaptive: the ensemble may grow by one member every `every` trials.
    #[serde(default)]
    pub every: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillStage {
    /// Epochs to train [default: the trial's].
    #[serde(default)]
    pub epochs: Option<usize>,
    /// The student is the best trial with at most this many parameters.
    #[serde(default)]
    pub max_parameters: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportStage {
    /// The directory, relative to the run directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Which files to write [default: all].
    #[serde(default)]
    pub format: Option<ExportFormat>,
}

/// What a stage does, without its settings: for display, records and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Ask the searcher, train, record; until the budget is spent.
    Search,
    /// Combine the best trials of a search into one model.
    Ensemble,
    /// Train a student from the best model.
    Distill,
    /// Train the best architecture on train + validation for longer.
    Retrain,
    /// Write the best model to a directory.
    Export,
}

impl StageKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [StageKind; 5] =
        [StageKind::Search, StageKind::Retrain, StageKind::Ensemble, StageKind::Distill, StageKind::Export];

    /// The settings a stage of this kind accepts besides `kind` and `needs`.
    pub fn settings(self) -> &'static [&'static str] {
        static SETTINGS: OnceLock<[&'static [&'static str]; 5]> = OnceLock::new();
        let all = SETTINGS.get_or_init(|| {
            [
                fields_of::<SearchStage>(),
                fields_of::<RetrainStage>(),
                fields_of::<EnsembleStage>(),
                fields_of::<DistillStage>(),
                fields_of::<ExportStage>(),
            ]
        });
        all[Self::ALL.iter().position(|k| *k == self).expect("ALL lists every kind")]
    }

    /// Every key of a stage of this kind, as unknown-key messages list them.
    fn keys(self) -> &'static [&'static str] {
        static KEYS: OnceLock<Vec<&'static [&'static str]>> = OnceLock::new();
        let all = KEYS.get_or_init(|| {
            StageKind::ALL
                .iter()
                .map(|kind| {
                    let keys: Vec<&'static str> =
                        ["kind", "needs"].into_iter().chain(kind.settings().iter().copied()).collect();
                    &*Vec::leak(keys)
                })
                .collect()
        });
        all[Self::ALL.iter().position(|k| *k == self).expect("ALL lists every kind")]
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageKind::Search => "search",
            StageKind::Ensemble => "ensemble",
            StageKind::Distill => "distill",
            StageKind::Retrain => "retrain",
            StageKind::Export => "export",
        })
    }
}

impl Stage {
    pub fn kind(&self) -> StageKind {
        match self.work {
            StageWork::Search(_) => StageKind::Search,
            StageWork::Retrain(_) => StageKind::Retrain,
            StageWork::Ensemble(_) => StageKind::Ensemble,
            StageWork::Distill(_) => StageKind::Distill,
            StageWork::Export(_) => StageKind::Export,
        }
    }

    /// The settings of a search stage.
    pub fn search(&self) -> Option<&SearchStage> {
        match &self.work {
            StageWork::Search(search) => Some(search),
            _ => None,
        }
    }
}

/// The field names serde derives for `T` (a struct), read by asking it to deserialise.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a std::cell::Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs have fields"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let fields = std::cell::Cell::new(&[][..]);
    let _ = T::deserialize(Fields(&fields));
    fields.get()
}

/// The words of a misplaced setting's message, after its name.
pub(super) const MISPLACED: &str = "` applies to ";

/// `` `top_k` applies to ensemble stages, not to export stages ``, when `key` is a
/// setting of other kinds.
fn misplaced(key: &str, kind: StageKind) -> Option<String> {
    let kinds: Vec<String> =
        StageKind::ALL.iter().filter(|k| k.settings().contains(&key)).map(|k| k.to_string()).collect();
    (!kinds.is_empty()).then(|| format!("`{key}{MISPLACED}{} stages, not to {kind} stages", kinds.join(" and ")))
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StageVisitor)
    }
}

struct StageVisitor;

impl<'de> Visitor<'de> for StageVisitor {
    type Value = Stage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stage: a map with `kind` and its settings")
    }

    /// Reads `kind` (and a `needs` before it) as it comes; the rest streams into the
    /// kind's settings, so that errors keep their place in the file. Other keys before
    /// `kind` are rare: the map is then read whole first.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stage, A::Error> {
        let mut needs: Option<Vec<String>> = None;
        let mut early: Vec<(String, serde_yaml_ng::Value)> = Vec::new();
        let kind = loop {
            match map.next_key::<String>()? {
                None => {
                    let every: Vec<&str> = StageKind::ALL.iter().flat_map(|k| k.keys().iter().copied()).collect();
                    return Err(match early.iter().find(|(key, _)| !every.contains(&key.as_str())) {
                        Some((key, _)) => de::Error::unknown_field(key, StageKind::Search.keys()),
                        None => de::Error::missing_field("kind"),
                    });
                }
                Some(key) if key == "kind" => break map.next_value::<StageKind>()?,
                Some(key) if key == "needs" && early.is_empty() => {
                    if needs.replace(map.next_value()?).is_some() {
                        return Err(de::Error::duplicate_field("needs"));
                    }
                }
                Some(key) => early.push((key, map.next_value()?)),
            }
        };
        let (work, later_needs) = if early.is_empty() {
            SettingsVisitor(kind).visit_map(map)?
        } else {
            let mut rest: serde_yaml_ng::Mapping = early.into_iter().map(|(k, v)| (k.into(), v)).collect();
            while let Some((key, value)) = map.next_entry::<String, serde_yaml_ng::Value>()? {
                rest.insert(key.into(), value);
            }
            serde_yaml_ng::Value::Mapping(rest).deserialize_map(SettingsVisitor(kind)).map_err(de::Error::custom)?
        };
        let needs = match (needs, later_needs) {
            (Some(_), Some(_)) => return Err(de::Error::duplicate_field("needs")),
            (needs, later) => needs.or(later).unwrap_or_default(),
        };
        Ok(Stage { needs, work })
    }
}

/// The settings of a stage of kind `.0` (and its `needs`, when they come after `kind`).
struct SettingsVisitor(StageKind);

impl<'de> Visitor<'de> for SettingsVisitor {
    type Value = (StageWork, Option<Vec<String>>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the settings of a {} stage", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut needs = None;
        let settings = MapAccessDeserializer::new(SettingsOf { map, kind: self.0, needs: &mut needs });
        let work = match self.0 {
            StageKind::Search => StageWork::Search(Deserialize::deserialize(settings)?),
            StageKind::Retrain => StageWork::Retrain(Deserialize::deserialize(settings)?),
            StageKind::Ensemble => StageWork::Ensemble(Deserialize::deserialize(settings)?),
            StageKind::Distill => StageWork::Distill(Deserialize::deserialize(settings)?),
            StageKind::Export => StageWork::Export(Deserialize::deserialize(settings)?),
        };
        Ok((work, needs))
    }
}

/// A stage's map as its kind's settings see it: `needs` is taken aside, and a key of
/// another kind (or none) is refused where it stands.
struct SettingsOf<'n, A> {
    map: A,
    kind: StageKind,
    needs: &'n mut Option<Vec<String>>,
}

/// What a key of a stage's map is.
enum Key<T> {
    Setting(T),
    Needs,
    Kind,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SettingsOf<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let checked = CheckedKey { seed: &mut seed, kind: self.kind };
            match self.map.next_key_seed(checked)? {
                None => return Ok(None),
                Some(Key::Setting(value)) => return Ok(Some(value)),
                Some(Key::Needs) => {
                    if self.needs.replace(self.map.next_value()?).is_some() {
                        return Err(de::Error::duplicate_field("needs"));
                    }
                }
                Some(Key::Kind) => return Err(de::Error::duplicate_field("kind")),
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Reads a key of a stage of kind `kind`; a setting goes on to `seed`.
struct CheckedKey<'s, K> {
    seed: &'s mut Option<K>,
    kind: StageKind,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for CheckedKey<'_, K> {
    type Value = Key<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // Errors raised while the key is read are located at the key.
        deserializer.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for CheckedKey<'_, K> {
    type Value = Key<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a setting's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        match key {
            "kind" => Ok(Key::Kind),
            "needs" => Ok(Key::Needs),
            _ if self.kind.settings().contains(&key) => {
                let seed = self.seed.take().expect("one key per seed");
                seed.deserialize(key.into_deserializer()).map(Key::Setting)
            }
            _ => Err(match misplaced(key, self.kind) {
                Some(message) => E::custom(message),
                None => E::unknown_field(key, self.kind.keys()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Stage, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(text)
    }

    #[test]
    fn kinds_know_their_settings() {
        assert_eq!(StageKind::Search.settings(), ["searcher", "budget"]);
        assert_eq!(StageKind::Export.keys(), ["kind", "needs", "dir", "format"]);
    }

    #[test]
    fn keys_may_come_in_any_order() {
        for text in [
            "kind: ensemble\nneeds: [s]\ntop_k: 3\n",
            "needs: [s]\nkind: ensemble\ntop_k: 3\n",
            "top_k: 3\nneeds: [s]\nkind: ensemble\n",
        ] {
            let stage = parse(text).unwrap();
            assert_eq!(stage.needs, ["s"], "{text}");
            let StageWork::Ensemble(ensemble) = stage.work else { panic!("{text}: not an ensemble") };
            assert_eq!(ensemble.top_k, Some(3), "{text}");
        }
    }

    #[test]
    fn a_setting_of_another_kind_is_refused_at_its_key() {
        let err = parse("kind: export\nneeds: [s]\ntop_k: 3\n").unwrap_err();
        assert!(err.to_string().starts_with("`top_k` applies to ensemble stages, not to export stages"), "{err}");
        assert_eq!(err.location().map(|l| (l.line(), l.column())), Some((3, 1)));
        let err = parse("kind: search\nepochs: 3\n").unwrap_err();
        assert!(err.to_string().contains("`epochs` applies to retrain and distill stages, not to search"), "{err}");
    }

    #[test]
    fn unknown_and_missing_keys() {
        let err = parse("kind: export\nneds: [s]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `neds`, expected one of `kind`, `needs`, `dir`, `format`"), "{err}");
        let err = parse("kinds: export\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `kinds`"), "{err}");
        assert!(parse("needs: []\n").unwrap_err().to_string().contains("missing field `kind`"));
        assert!(parse("kind: export\nkind: export\n").unwrap_err().to_string().contains("duplicate field `kind`"));
    }

    #[test]
    fn stages_serialise_with_their_kind() {
        let stage = parse("kind: retrain\nneeds: [s]\nepochs: 4\n").unwrap();
        let text = serde_yaml_ng::to_string(&stage).unwrap();
        let again = parse(&text).unwrap();
        assert_eq!(again.kind(), StageKind::Retrain);
        assert_eq!(again.needs, ["s"]);
    }
}
