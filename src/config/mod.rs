//! The run configuration: a config file (see [`ConfigChoice`] for which one, or the built-in
//! defaults when there is none), then `--set key.path=value` overrides, then the
//! `--device`/`--precision` flags, last one wins. This is the one place where they are merged; the
//! result remembers where each value came from so `vlmrun config` can say it.

pub mod bounds;
pub mod builtin;
mod error;
mod load;
mod overrides;
mod provenance;
mod schema;
mod suggest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use load::{load_file, parse_str};
pub use provenance::Origin;
pub use schema::*;

/// Environment variable naming the config file (after `--config`, before `./configs/config.yaml`).
pub const CONFIG_VAR: &str = "VLMRUN_CONFIG";

/// The config file a run uses when nothing names one (relative to the working directory).
pub const DEFAULT_CONFIG_FILE: &str = "configs/config.yaml";

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct ConfigRequest {
    /// `--config PATH` (must exist).
    pub file: Option<PathBuf>,
    /// The value of `VLMRUN_CONFIG` (must exist when set).
    pub env_file: Option<PathBuf>,
    pub sets: Vec<String>,
    /// A command's own flags that set config keys (e.g. `caption --beams 3`), applied after `--set`.
    pub flags: Vec<FlagOverride>,
    pub device: Option<String>,
    pub precision: Option<String>,
}

/// A command-line flag that stands for a config key.
#[derive(Debug, Clone)]
pub struct FlagOverride {
    pub flag: &'static str,
    pub key: &'static str,
    pub value: String,
}

impl FlagOverride {
    /// The given `(flag, config key, value)` triples whose value was set, in order.
    pub fn from_flags(
        flags: &[(&'static str, &'static str, &Option<String>)],
    ) -> Vec<FlagOverride> {
        flags
            .iter()
            .filter_map(|(flag, key, value)| {
                value.as_ref().map(|value| FlagOverride {
                    flag,
                    key,
                    value: value.clone(),
                })
            })
            .collect()
    }
}

/// Which config file a run reads. Lookup order: `--config`, `VLMRUN_CONFIG`,
/// `./configs/config.yaml` when present, else the built-in defaults (no file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChoice {
    /// `--config PATH`.
    Flag(PathBuf),
    /// `VLMRUN_CONFIG=PATH`.
    Env(PathBuf),
    /// `configs/config.yaml` in the working directory.
    WorkingDir(PathBuf),
    /// No file: every value is a built-in default.
    BuiltIn,
}

impl ConfigChoice {
    /// Applies the lookup order to what the command line and the environment name.
    pub fn choose(flag: Option<&Path>, env: Option<&Path>) -> ConfigChoice {
        if let Some(path) = flag {
            ConfigChoice::Flag(path.to_path_buf())
        } else if let Some(path) = env {
            ConfigChoice::Env(path.to_path_buf())
        } else if Path::new(DEFAULT_CONFIG_FILE).is_file() {
            ConfigChoice::WorkingDir(PathBuf::from(DEFAULT_CONFIG_FILE))
        } else {
            ConfigChoice::BuiltIn
        }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigChoice::Flag(path) | ConfigChoice::Env(path) | ConfigChoice::WorkingDir(path) => {
                Some(path)
            }
            ConfigChoice::BuiltIn => None,
        }
    }

    /// One line for `vlmrun config` and the resolved-config.yaml header.
    pub fn describe(&self) -> String {
        match self {
            ConfigChoice::Flag(path) => format!("{} (from --config)", path.display()),
            ConfigChoice::Env(path) => format!("{} (from {CONFIG_VAR})", path.display()),
            ConfigChoice::WorkingDir(path) => {
                format!("{} (found in the working directory)", path.display())
            }
            ConfigChoice::BuiltIn => format!(
                "none, built-in defaults (no --config, no {CONFIG_VAR}, no ./{DEFAULT_CONFIG_FILE})"
            ),
        }
    }
}

/// The configuration a run uses, with the origin of every leaf value (`generation.num_beams`, ...).
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub config: Config,
    /// The config file read, or `(built-in defaults)`.
    pub file: PathBuf,
    /// How the file was chosen.
    pub chosen: ConfigChoice,
    pub origins: BTreeMap<String, Origin>,
}

impl ResolvedConfig {
    /// The resolved configuration as YAML, each value followed by a comment saying where it came from.
    pub fn to_annotated_yaml(&self) -> Result<String, ConfigError> {
        let tree = serde_json::to_value(&self.config)
            .map_err(|err| ConfigError::Internal(err.to_string()))?;
        Ok(provenance::annotated_yaml(
            &tree,
            &self.origins,
            &self.chosen.describe(),
        ))
    }

    /// Writes the annotated YAML to `dir/resolved-config.yaml` (every run keeps the config it used).
    pub fn write_next_to(&self, dir: &Path) -> Result<PathBuf, std::io::Error> {
        let path = dir.join("resolved-config.yaml");
        let text = self
            .to_annotated_yaml()
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// Chooses and loads the file (or the built-in defaults), applies the overrides and flags, and
/// validates the result.
pub fn resolve(request: &ConfigRequest) -> Result<ResolvedConfig, ConfigError> {
    let chosen = ConfigChoice::choose(request.file.as_deref(), request.env_file.as_deref());
    let loaded = match &chosen {
        ConfigChoice::Flag(path) | ConfigChoice::WorkingDir(path) => load_file(path)?,
        ConfigChoice::Env(path) => load_file(path).map_err(|err| match err {
            ConfigError::NotFound { path } => ConfigError::EnvNotFound { path },
            other => other,
        })?,
        ConfigChoice::BuiltIn => load::LoadedFile {
            config: Config::default(),
            raw: serde_json::Value::Object(Default::default()),
        },
    };
    resolve_loaded(loaded, chosen, request)
}

/// As [`resolve`], for a file already parsed.
pub fn resolve_loaded(
    loaded: load::LoadedFile,
    chosen: ConfigChoice,
    request: &ConfigRequest,
) -> Result<ResolvedConfig, ConfigError> {
    let schema = serde_json::to_value(Config::default())
        .map_err(|e| ConfigError::Internal(e.to_string()))?;
    let mut origins = BTreeMap::new();
    provenance::record_file_origins(&schema, &loaded.raw, &mut Vec::new(), &mut origins);

    let mut config = loaded.config;
    let mut tree =
        serde_json::to_value(&config).map_err(|e| ConfigError::Internal(e.to_string()))?;
    for argument in &request.sets {
        let (segments, raw_value) = overrides::split_assignment(argument)?;
        overrides::check_path(&schema, &segments, argument)?;
        config = overrides::apply(&mut tree, &schema, &segments, &raw_value, argument)?;
        origins.insert(segments.join("."), Origin::Set(argument.clone()));
    }
    for flag in &request.flags {
        let segments: Vec<String> = flag.key.split('.').map(str::to_string).collect();
        let label = format!("{} {}", flag.flag, flag.value);
        overrides::check_path(&schema, &segments, &label)?;
        config = overrides::apply(&mut tree, &schema, &segments, &flag.value, &label).map_err(
            |err| match err {
                ConfigError::Override { message, .. } => ConfigError::Flag {
                    flag: flag.flag.to_string(),
                    value: flag.value.clone(),
                    message,
                },
                other => other,
            },
        )?;
        origins.insert(flag.key.to_string(), Origin::Flag(flag.flag));
    }
    if let Some(device) = &request.device {
        config.device = device.parse().map_err(|message| ConfigError::Flag {
            flag: "--device".to_string(),
            value: device.clone(),
            message,
        })?;
        origins.insert("device".to_string(), Origin::Flag("--device"));
    }
    if let Some(precision) = &request.precision {
        config.precision = precision.parse().map_err(|message| ConfigError::Flag {
            flag: "--precision".to_string(),
            value: precision.clone(),
            message,
        })?;
        origins.insert("precision".to_string(), Origin::Flag("--precision"));
    }
    use_builtin_files(&mut config, &mut origins);
    validate(&config)?;
    Ok(ResolvedConfig {
        config,
        file: chosen
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("(built-in defaults)")),
        chosen,
        origins,
    })
}

/// `model.source` and `data.path` left at their defaults name files relative to the working
/// directory (the repository's); where they are absent, the copies built into the binary are used
/// (see [`builtin`]). Values that a file, `--set` or a flag gave are never replaced.
fn use_builtin_files(config: &mut Config, origins: &mut BTreeMap<String, Origin>) {
    let untouched = |key: &str, origins: &BTreeMap<String, Origin>| !origins.contains_key(key);
    if untouched("model.source", origins)
        && config.model.source == builtin::DEMO_MODEL_SOURCE
        && !Path::new(builtin::DEMO_MODEL_SOURCE).is_dir()
    {
        config.model.source = builtin::demo_model_dir().display().to_string();
        origins.insert("model.source".to_string(), Origin::BuiltIn);
    }
    if untouched("data.path", origins)
        && config.data.source == DataSource::Manifest
        && config.data.path == Path::new(builtin::SAMPLES_PATH)
        && !Path::new(builtin::SAMPLES_PATH).is_file()
    {
        config.data.path = builtin::samples_manifest();
        origins.insert("data.path".to_string(), Origin::BuiltIn);
    }
}

/// Cross-field rules the types alone cannot express.
fn validate(config: &Config) -> Result<(), ConfigError> {
    let generation = &config.generation;
    let problem = if generation.num_beams == 0 {
        Some(("generation.num_beams", "must be at least 1"))
    } else if generation.batch_size == 0 {
        Some(("generation.batch_size", "must be at least 1"))
    } else if generation.max_length < 2 {
        Some((
            "generation.max_length",
            "must be at least 2 (bos plus one token)",
        ))
    } else if generation.min_length > generation.max_length {
        Some((
            "generation.min_length",
            "must not exceed generation.max_length",
        ))
    } else if generation.repetition_penalty.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        // NaN compares as nothing: refused with the rest.
        Some((
            "generation.repetition_penalty",
            "must be > 0 (1.0 = no penalty)",
        ))
    } else if config
        .output
        .dir
        .as_os_str()
        .to_string_lossy()
        .trim()
        .is_empty()
    {
        // An empty path would write every result into the working directory.
        Some((
            "output.dir",
            "must not be empty (it is the folder a run writes its files to, e.g. runs/default)",
        ))
    } else if config
        .data
        .path
        .as_os_str()
        .to_string_lossy()
        .trim()
        .is_empty()
    {
        Some((
            "data.path",
            "must not be empty (the dataset's folder, manifest or annotation file)",
        ))
    } else if config.preprocess.max_pixels == 0 {
        Some(("preprocess.max_pixels", "must be at least 1"))
    } else {
        train_problem(&config.train)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let problem = problem
        .map(|(key, message)| (key, message.to_string()))
        .or_else(|| bounds::problem(config, cores));
    match problem {
        Some((key, message)) => Err(ConfigError::Flag {
            flag: "config key".to_string(),
            value: key.to_string(),
            message,
        }),
        None => Ok(()),
    }
}

/// The first invalid `train.*` value, as (key, what it must be).
fn train_problem(train: &TrainConfig) -> Option<(&'static str, &'static str)> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if train.batch_size == 0 {
        Some(("train.batch_size", "must be at least 1"))
    } else if train.grad_accumulation == 0 {
        Some(("train.grad_accumulation", "must be at least 1"))
    } else if train.max_tokens < 2 {
        Some((
            "train.max_tokens",
            "must be at least 2 (bos plus one token)",
        ))
    } else if !(0.0..1.0).contains(&train.label_smoothing) {
        Some(("train.label_smoothing", "must be in [0, 1)"))
    } else if !positive(train.lr) {
        Some(("train.lr", "must be a positive number"))
    } else if !(train.min_lr >= 0.0 && train.min_lr <= train.lr) {
        Some(("train.min_lr", "must be in [0, train.lr]"))
    } else if !(train.weight_decay >= 0.0 && train.weight_decay.is_finite()) {
        Some(("train.weight_decay", "must be >= 0"))
    } else if !(0.0..1.0).contains(&train.beta1) {
        Some(("train.beta1", "must be in [0, 1)"))
    } else if !(0.0..1.0).contains(&train.beta2) {
        Some(("train.beta2", "must be in [0, 1)"))
    } else if !positive(train.eps) {
        Some(("train.eps", "must be a positive number"))
    } else if !(train.max_grad_norm >= 0.0 && train.max_grad_norm.is_finite()) {
        Some(("train.max_grad_norm", "must be >= 0 (0 = no clipping)"))
    } else if train.max_steps == Some(0) || (train.max_steps.is_none() && train.epochs == 0) {
        Some((
            "train.max_steps",
            "training needs at least one step (set train.epochs or train.max_steps)",
        ))
    } else if train.gradient_checkpointing && train.backward == schema::BackwardPass::Autograd {
        Some((
            "train.gradient_checkpointing",
            "needs train.backward: explicit (the autograd path keeps its whole graph)",
        ))
    } else if train.eval_every > 0 && train.eval_images == 0 {
        Some((
            "train.eval_every",
            "needs train.eval_images > 0 (images held out for evaluation)",
        ))
    } else {
        None
    }
}

/// Every leaf key path of the schema, e.g. `generation.num_beams`.
pub fn leaf_paths() -> Vec<String> {
    let mut paths = Vec::new();
    if let Ok(schema) = serde_json::to_value(Config::default()) {
        provenance::collect_leaves(&schema, &mut Vec::new(), &mut paths);
    }
    paths
}
