//! `vlmrun doctor [--json]`: exit 0 when the configured device is usable, 2 otherwise.

use super::{print_stdout, Context};
use crate::device::probe_system;
use crate::doctor;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, json: bool) -> Result<Exit, Error> {
    let facts = probe_system();
    let report = doctor::run(&context.config.config, &facts, &context.cuda);
    let text = if json {
        let mut text = serde_json::to_string_pretty(&report)
            .map_err(|err| Error::Internal(format!("doctor report: {err}")))?;
        text.push('\n');
        text
    } else {
        report.to_text()
    };
    print_stdout(&text)?;
    Ok(if report.usable {
        Exit::Success
    } else {
        Exit::Usage
    })
}
