//! `vlmrun config`: prints the resolved configuration with each value's origin.

use super::{print_stdout, Context};
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context) -> Result<Exit, Error> {
    print_stdout(&context.config.to_annotated_yaml()?)?;
    Ok(Exit::Success)
}
