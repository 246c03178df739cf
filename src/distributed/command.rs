//! The launch command, kept in `world.json` so that a missing shard comes with the exact command that
//! reruns it: the process's arguments without the per-rank flags and `--fresh` (a rerun must resume,
//! not start over), to which `--rank K --world-size N` is appended.

/// Flags removed from the recorded command; each takes a value.
const RANK_FLAGS: [&str; 3] = ["--rank", "--world-size", "--local-rank"];

/// `args` (argv, program first) without rank flags (`--rank 1`, `--rank=1`, ...) and `--fresh`.
pub fn launch_command(args: &[String]) -> Vec<String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if arg == "--fresh" {
            continue;
        }
        if RANK_FLAGS.contains(&arg.as_str()) {
            skip_value = true;
            continue;
        }
        let with_value = RANK_FLAGS.iter().any(|flag| {
            arg.strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
        });
        if !with_value {
            kept.push(arg.clone());
        }
    }
    kept
}

/// The shell line that reruns rank `rank` of `world_size` with `command`.
pub fn rerun_line(command: &[String], rank: usize, world_size: usize) -> String {
    let mut words: Vec<String> = command.iter().map(|word| shell_quote(word)).collect();
    words.extend([
        "--rank".to_string(),
        rank.to_string(),
        "--world-size".to_string(),
        world_size.to_string(),
    ]);
    words.join(" ")
}

/// `word` as one POSIX shell word (single quotes when it needs any).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn rank_flags_and_fresh_are_dropped() {
        let args = strings(&[
            "vlmrun",
            "--set",
            "output.dir=/shared/run",
            "baseline",
            "--fresh",
            "--rank",
            "1",
            "--world-size=2",
            "--local-rank",
            "1",
            "--wait-timeout",
            "60",
        ]);
        assert_eq!(
            launch_command(&args),
            strings(&[
                "vlmrun",
                "--set",
                "output.dir=/shared/run",
                "baseline",
                "--wait-timeout",
                "60"
            ])
        );
    }

    #[test]
    fn rerun_lines_quote_what_the_shell_would_split() {
        let command = strings(&[
            "vlmrun",
            "--set",
            "generation.prompt=a picture of ",
            "baseline",
        ]);
        assert_eq!(
            rerun_line(&command, 3, 4),
            "vlmrun --set 'generation.prompt=a picture of ' baseline --rank 3 --world-size 4"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
