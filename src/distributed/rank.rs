//! Which rank this process is, from the launcher that started it. Precedence, first match wins:
//! `--rank/--world-size` flags, torchrun-style variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), a Slurm `srun` step (`SLURM_PROCID`,
//! `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, the node list), Open MPI (`OMPI_COMM_WORLD_RANK`, `..._SIZE`, `..._LOCAL_RANK`,
//! `..._LOCAL_SIZE`), else a single process. A Slurm batch script outside `srun` is one process: Slurm
//! sets `SLURM_PROCID=0` and `SLURM_NTASKS=N` there too, but only an `srun` step has
//! `SLURM_STEP_NUM_TASKS`, and only `srun` starts the N tasks. The environment is passed in as a map, never read here, so
//! every launcher is testable without touching the process environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DistributedError;

/// Environment variables, name -> value (the process environment, or a test's map).
pub type Env = BTreeMap<String, String>;

/// Who told us the rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Launcher {
    /// `--rank` / `--world-size` on the command line.
    Flags,
    /// torchrun, or anything that exports `RANK` and `WORLD_SIZE` (a shell loop, Kubernetes jobs).
    Torchrun,
    /// A task of a Slurm `srun` step.
    Slurm,
    /// Open MPI's `mpirun`.
    OpenMpi,
    /// No launcher: world size 1.
    Single,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Flags => "--rank/--world-size flags",
            Launcher::Torchrun => "torchrun-style variables (RANK, WORLD_SIZE)",
            Launcher::Slurm => "Slurm srun (SLURM_PROCID, SLURM_STEP_NUM_TASKS)",
            Launcher::OpenMpi => "Open MPI (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE)",
            Launcher::Single => "single process",
        })
    }
}

/// The rendezvous address a launcher published. `baseline` only records it (its ranks meet through the
/// output directory); it is here for the training side and for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Master {
    pub addr: String,
    pub port: Option<u16>,
}

/// This process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankInfo {
    /// 0-based global rank, < world_size.
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes on this machine: picks the GPU.
    pub local_rank: usize,
    /// Processes on this machine, when the launcher says.
    pub local_world_size: Option<usize>,
    pub launcher: Launcher,
    pub master: Option<Master>,
}

impl RankInfo {
    /// World size 1, no launcher.
    pub fn single() -> RankInfo {
        RankInfo {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: None,
            launcher: Launcher::Single,
            master: None,
        }
    }
}

impl RankInfo {
    /// How many ranks share this machine (its cores): the launcher's local world size; without one,
    /// flags and torchrun-style variables mean one machine (all ranks), Slurm and Open MPI one (they
    /// bind each task to its own cores).
    pub fn ranks_on_this_machine(&self) -> usize {
        match (self.local_world_size, self.launcher) {
            (Some(local), _) => local,
            (None, Launcher::Flags | Launcher::Torchrun) => self.world_size,
            (None, _) => 1,
        }
        .max(1)
    }
}

/// The explicit command-line flags (they override every launcher).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankFlags {
    pub rank: Option<usize>,
    pub world_size: Option<usize>,
    pub local_rank: Option<usize>,
}

/// Finds this process's rank. Inconsistent or malformed values are errors naming the variable or flag.
pub fn discover(flags: &RankFlags, env: &Env) -> Result<RankInfo, DistributedError> {
    let info = if flags.rank.is_some() || flags.world_size.is_some() || flags.local_rank.is_some() {
        from_flags(flags, env)?
    } else if env.contains_key("RANK") || env.contains_key("WORLD_SIZE") {
        from_torchrun(env)?
    } else if env.contains_key("SLURM_PROCID") && env.contains_key("SLURM_STEP_NUM_TASKS") {
        from_slurm(env)?
    } else if env.contains_key("OMPI_COMM_WORLD_RANK") || env.contains_key("OMPI_COMM_WORLD_SIZE") {
        from_open_mpi(env)?
    } else {
        RankInfo::single()
    };
    check(&info)?;
    Ok(info)
}

fn from_flags(flags: &RankFlags, env: &Env) -> Result<RankInfo, DistributedError> {
    let missing = |name: &str, because: &str| DistributedError::Missing {
        name: name.to_string(),
        because: because.to_string(),
        fix: "give --rank and --world-size together, e.g. --rank 1 --world-size 2".to_string(),
    };
    let (rank, world_size) = match (flags.rank, flags.world_size) {
        (Some(rank), Some(world_size)) => (rank, world_size),
        (Some(_), None) => return Err(missing("--world-size", "--rank is")),
        (None, Some(_)) => return Err(missing("--rank", "--world-size is")),
        (None, None) => return Err(missing("--rank", "--local-rank is")),
    };
    Ok(RankInfo {
        rank,
        world_size,
        // One machine unless told otherwise: the plain `for k in 0 1` launch.
        local_rank: flags.local_rank.unwrap_or(rank),
        local_world_size: None,
        launcher: Launcher::Flags,
        master: master_from(env, None)?,
    })
}

fn from_torchrun(env: &Env) -> Result<RankInfo, DistributedError> {
    let because = "RANK or WORLD_SIZE is set (a torchrun-style launch)";
    let fix = "export RANK, WORLD_SIZE (and LOCAL_RANK) together, or pass --rank and --world-size";
    let rank = required(env, "RANK", because, fix)?;
    let world_size = required(env, "WORLD_SIZE", because, fix)?;
    Ok(RankInfo {
        rank,
        world_size,
        // torchrun always sets LOCAL_RANK; a shell loop on one machine may not.
        local_rank: optional(env, "LOCAL_RANK")?.unwrap_or(rank),
        local_world_size: optional(env, "LOCAL_WORLD_SIZE")?,
        launcher: Launcher::Torchrun,
        master: master_from(env, None)?,
    })
}

fn from_slurm(env: &Env) -> Result<RankInfo, DistributedError> {
    let because = "SLURM_PROCID and SLURM_STEP_NUM_TASKS are set (a task of an srun step)";
    let fix = "start the ranks with `srun`, or pass --rank and --world-size";
    let rank = required(env, "SLURM_PROCID", because, fix)?;
    let world_size = required(env, "SLURM_STEP_NUM_TASKS", because, fix)?;
    let local_rank = required(env, "SLURM_LOCALID", because, fix)?;
    let node_list = [
        "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
    ]
    .iter()
    .find_map(|name| env.get(*name).map(|value| (*name, value.as_str())));
    let first_node = match node_list {
        Some((name, list)) => {
            Some(first_host(list).ok_or_else(|| DistributedError::Malformed {
                name: name.to_string(),
                value: list.to_string(),
                expected: "a Slurm host list (e.g. gpu[01-04],gpu07)",
                fix: "let Slurm set it, or unset it".to_string(),
            })?)
        }
        None => None,
    };
    Ok(RankInfo {
        rank,
        world_size,
        local_rank,
        local_world_size: None,
        launcher: Launcher::Slurm,
        master: master_from(env, first_node)?,
    })
}

fn from_open_mpi(env: &Env) -> Result<RankInfo, DistributedError> {
    let because = "OMPI_COMM_WORLD_RANK or OMPI_COMM_WORLD_SIZE is set (an Open MPI launch)";
    let fix = "start each rank with `mpirun`, or pass --rank and --world-size";
    Ok(RankInfo {
        rank: required(env, "OMPI_COMM_WORLD_RANK", because, fix)?,
        world_size: required(env, "OMPI_COMM_WORLD_SIZE", because, fix)?,
        local_rank: required(env, "OMPI_COMM_WORLD_LOCAL_RANK", because, fix)?,
        local_world_size: optional(env, "OMPI_COMM_WORLD_LOCAL_SIZE")?,
        launcher: Launcher::OpenMpi,
        master: master_from(env, None)?,
    })
}

/// `MASTER_ADDR`/`MASTER_PORT` when set, else the first Slurm node without a port.
fn master_from(env: &Env, first_node: Option<String>) -> Result<Option<Master>, DistributedError> {
    let port = match env.get("MASTER_PORT") {
        None => None,
        Some(value) => {
            Some(
                value
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| DistributedError::Malformed {
                        name: "MASTER_PORT".to_string(),
                        value: value.clone(),
                        expected: "a TCP port (1-65535)",
                        fix: "export MASTER_PORT=29500 (any free port), or unset it".to_string(),
                    })?,
            )
        }
    };
    let addr = env
        .get("MASTER_ADDR")
        .map(|addr| addr.trim().to_string())
        .filter(|addr| !addr.is_empty())
        .or(first_node);
    Ok(addr.map(|addr| Master { addr, port }))
}

fn parse_count(name: &str, value: &str) -> Result<usize, DistributedError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| DistributedError::Malformed {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a whole number >= 0",
            fix: format!("let the launcher set {name}, or unset it"),
        })
}

fn required(env: &Env, name: &str, because: &str, fix: &str) -> Result<usize, DistributedError> {
    match env.get(name) {
        Some(value) => parse_count(name, value),
        None => Err(DistributedError::Missing {
            name: name.to_string(),
            because: because.to_string(),
            fix: fix.to_string(),
        }),
    }
}

fn optional(env: &Env, name: &str) -> Result<Option<usize>, DistributedError> {
    env.get(name)
        .map(|value| parse_count(name, value))
        .transpose()
}

/// The names this launcher's values came from, for error messages.
fn names(launcher: Launcher) -> (&'static str, &'static str, &'static str, &'static str) {
    match launcher {
        Launcher::Flags | Launcher::Single => (
            "--rank",
            "--world-size",
            "--local-rank",
            "the local world size",
        ),
        Launcher::Torchrun => ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
        Launcher::Slurm => (
            "SLURM_PROCID",
            "SLURM_STEP_NUM_TASKS",
            "SLURM_LOCALID",
            "the tasks per node",
        ),
        Launcher::OpenMpi => (
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "OMPI_COMM_WORLD_LOCAL_SIZE",
        ),
    }
}

fn check(info: &RankInfo) -> Result<(), DistributedError> {
    let (rank, world, local, local_world) = names(info.launcher);
    let inconsistent = |message: String| DistributedError::Inconsistent {
        message,
        fix: format!("check how the ranks are launched ({})", info.launcher),
    };
    if info.world_size == 0 {
        return Err(inconsistent(format!(
            "{world}=0: a run needs at least one rank"
        )));
    }
    if info.rank >= info.world_size {
        return Err(inconsistent(format!(
            "{rank}={} but {world}={}: ranks are 0..={}",
            info.rank,
            info.world_size,
            info.world_size - 1
        )));
    }
    if info.local_rank >= info.world_size {
        return Err(inconsistent(format!(
            "{local}={} but {world}={}: a local rank counts processes on one machine, so it is below the world size",
            info.local_rank, info.world_size
        )));
    }
    if let Some(local_size) = info.local_world_size {
        if local_size == 0 || local_size > info.world_size || info.local_rank >= local_size {
            return Err(inconsistent(format!(
                "{local_world}={local_size} does not fit {local}={} and {world}={}",
                info.local_rank, info.world_size
            )));
        }
    }
    Ok(())
}

/// The first host of a Slurm host list: `gpu[01-04,07],cpu1` -> `gpu01`. `None` when it is not one.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0usize;
    let mut end = list.len();
    for (at, ch) in list.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                end = at;
                break;
            }
            _ => {}
        }
    }
    let entry = list.get(..end)?;
    let host = match entry.split_once('[') {
        None => entry.to_string(),
        Some((prefix, rest)) => {
            let (ranges, suffix) = rest.split_once(']')?;
            let first = ranges.split(',').next()?;
            let start = first.split('-').next()?;
            if start.is_empty() || !start.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            format!("{prefix}{start}{suffix}")
        }
    };
    (!host.is_empty() && !host.contains(['[', ']'])).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn none() -> RankFlags {
        RankFlags::default()
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        let info = discover(&none(), &env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(info, RankInfo::single());
    }

    #[test]
    fn torchrun_variables() {
        let info = discover(
            &none(),
            &env(&[
                ("RANK", "5"),
                ("WORLD_SIZE", "8"),
                ("LOCAL_RANK", "1"),
                ("LOCAL_WORLD_SIZE", "4"),
                ("MASTER_ADDR", "node0"),
                ("MASTER_PORT", "29500"),
            ]),
        )
        .unwrap();
        assert_eq!(
            info,
            RankInfo {
                rank: 5,
                world_size: 8,
                local_rank: 1,
                local_world_size: Some(4),
                launcher: Launcher::Torchrun,
                master: Some(Master {
                    addr: "node0".into(),
                    port: Some(29500)
                }),
            }
        );
    }

    #[test]
    fn a_shell_loop_without_local_rank_uses_the_rank() {
        let info = discover(&none(), &env(&[("RANK", "1"), ("WORLD_SIZE", "2")])).unwrap();
        assert_eq!((info.rank, info.world_size, info.local_rank), (1, 2, 1));
        assert_eq!(info.master, None);
    }

    #[test]
    fn slurm_variables_and_first_node() {
        let info = discover(
            &none(),
            &env(&[
                ("SLURM_PROCID", "6"),
                ("SLURM_NTASKS", "16"),
                ("SLURM_STEP_NUM_TASKS", "8"),
                ("SLURM_LOCALID", "2"),
                ("SLURM_JOB_NODELIST", "gpu[03-04,09],login1"),
            ]),
        )
        .unwrap();
        assert_eq!((info.rank, info.world_size, info.local_rank), (6, 8, 2));
        assert_eq!(info.launcher, Launcher::Slurm);
        assert_eq!(
            info.master,
            Some(Master {
                addr: "gpu03".into(),
                port: None
            })
        );
    }

    #[test]
    fn a_slurm_batch_script_outside_srun_is_one_process() {
        let batch = env(&[
            ("SLURM_JOB_ID", "200505"),
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_NODELIST", "gnode[10,20,25,37]"),
        ]);
        assert_eq!(discover(&none(), &batch).unwrap(), RankInfo::single());
    }

    #[test]
    fn open_mpi_variables() {
        let info = discover(
            &none(),
            &env(&[
                ("OMPI_COMM_WORLD_RANK", "3"),
                ("OMPI_COMM_WORLD_SIZE", "4"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ]),
        )
        .unwrap();
        assert_eq!((info.rank, info.world_size, info.local_rank), (3, 4, 1));
        assert_eq!(info.local_world_size, Some(2));
        assert_eq!(info.launcher, Launcher::OpenMpi);
    }

    #[test]
    fn precedence_flags_then_torchrun_then_slurm_then_mpi() {
        let all = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("SLURM_PROCID", "2"),
            ("SLURM_STEP_NUM_TASKS", "3"),
            ("SLURM_LOCALID", "0"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
        ]);
        let flags = RankFlags {
            rank: Some(0),
            world_size: Some(5),
            local_rank: None,
        };
        assert_eq!(discover(&flags, &all).unwrap().world_size, 5);
        assert_eq!(discover(&none(), &all).unwrap().world_size, 2);
        let mut no_torch = all.clone();
        no_torch.remove("RANK");
        no_torch.remove("WORLD_SIZE");
        assert_eq!(discover(&none(), &no_torch).unwrap().world_size, 3);
        let mut mpi_only = no_torch.clone();
        mpi_only.retain(|k, _| !k.starts_with("SLURM"));
        assert_eq!(discover(&none(), &mpi_only).unwrap().world_size, 4);
    }

    #[test]
    fn ranks_on_this_machine() {
        let flags = RankFlags {
            rank: Some(0),
            world_size: Some(4),
            local_rank: None,
        };
        assert_eq!(
            discover(&flags, &Env::new())
                .unwrap()
                .ranks_on_this_machine(),
            4
        );
        let torchrun = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "2"),
        ]);
        assert_eq!(
            discover(&none(), &torchrun)
                .unwrap()
                .ranks_on_this_machine(),
            2
        );
        assert_eq!(RankInfo::single().ranks_on_this_machine(), 1);
    }

    #[test]
    fn flags_default_the_local_rank_to_the_rank() {
        let flags = RankFlags {
            rank: Some(3),
            world_size: Some(4),
            local_rank: None,
        };
        let info = discover(&flags, &Env::new()).unwrap();
        assert_eq!(info.local_rank, 3);
        let flags = RankFlags {
            local_rank: Some(1),
            ..flags
        };
        assert_eq!(discover(&flags, &Env::new()).unwrap().local_rank, 1);
    }

    fn error(flags: &RankFlags, pairs: &[(&str, &str)]) -> String {
        discover(flags, &env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let message = error(&none(), &[("RANK", "one"), ("WORLD_SIZE", "2")]);
        assert!(message.contains("RANK=\"one\""), "{message}");
        let message = error(&none(), &[("RANK", "-1"), ("WORLD_SIZE", "2")]);
        assert!(message.contains("RANK=\"-1\""), "{message}");
        let message = error(
            &none(),
            &[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "2x"),
                ("SLURM_LOCALID", "0"),
            ],
        );
        assert!(message.contains("SLURM_STEP_NUM_TASKS=\"2x\""), "{message}");
        let message = error(
            &none(),
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "99999")],
        );
        assert!(message.contains("MASTER_PORT"), "{message}");
        let message = error(
            &none(),
            &[
                ("SLURM_PROCID", "0"),
                ("SLURM_STEP_NUM_TASKS", "2"),
                ("SLURM_LOCALID", "0"),
                ("SLURM_JOB_NODELIST", "gpu[01-"),
            ],
        );
        assert!(message.contains("SLURM_JOB_NODELIST"), "{message}");
    }

    #[test]
    fn missing_partners_are_named() {
        let message = error(&none(), &[("RANK", "0")]);
        assert!(message.contains("WORLD_SIZE is not set"), "{message}");
        let message = error(&none(), &[("WORLD_SIZE", "2")]);
        assert!(message.contains("RANK is not set"), "{message}");
        let message = error(
            &none(),
            &[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "2")],
        );
        assert!(message.contains("SLURM_LOCALID is not set"), "{message}");
        let message = error(
            &none(),
            &[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")],
        );
        assert!(
            message.contains("OMPI_COMM_WORLD_LOCAL_RANK is not set"),
            "{message}"
        );
        let flags = RankFlags {
            rank: Some(1),
            ..RankFlags::default()
        };
        assert!(error(&flags, &[]).contains("--world-size is not set"));
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let message = error(&none(), &[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(message.contains("RANK=2 but WORLD_SIZE=2"), "{message}");
        let message = error(&none(), &[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(message.contains("WORLD_SIZE=0"), "{message}");
        let message = error(
            &none(),
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "2"),
                ("LOCAL_WORLD_SIZE", "2"),
            ],
        );
        assert!(message.contains("LOCAL_WORLD_SIZE=2"), "{message}");
        let flags = RankFlags {
            rank: Some(0),
            world_size: Some(2),
            local_rank: Some(5),
        };
        assert!(error(&flags, &[]).contains("--local-rank=5"));
    }

    #[test]
    fn slurm_host_lists() {
        assert_eq!(first_host("node7").as_deref(), Some("node7"));
        assert_eq!(first_host("a1,a2").as_deref(), Some("a1"));
        assert_eq!(first_host("gpu[01-04]").as_deref(), Some("gpu01"));
        assert_eq!(first_host("gpu[7,9-10]-ib").as_deref(), Some("gpu7-ib"));
        assert_eq!(first_host("gpu[01-04"), None);
        assert_eq!(first_host("gpu]"), None);
        assert_eq!(first_host(""), None);
    }
}
