//! `vlmrun fidelity` (placeholder until the fidelity module lands).

use super::Context;
use crate::cli::FidelityArgs;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(_context: &Context, _args: &FidelityArgs) -> Result<Exit, Error> {
    Err(Error::Usage("fidelity: not implemented yet".to_string()))
}
