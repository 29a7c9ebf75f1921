//! Decodes the event's data and does nothing else: the benchmark's measure
//! of what eddy itself costs per event.

use eddy_sdk::{Event, HandlerError, Value};

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    let _data: Value = event.data()?;
    Ok(())
}
