//! Tests of the `[report.calculations]` bindings as the whole config file
//! validates them (the section lives in `mrv-gateway-report`; the cross
//! checks against `[[devices]]` need the whole file).

use crate::config::{ConfigError, parse};
use std::path::Path;

const BASE: &str = r#"
[site]
id = "s1"
[gateway]
id = "gw"
data_dir = "/tmp/x"

[[devices]]
id = "pv-1"
kind = "solar_meter"
channels = [{ id = "energy", quantity = "energy", kind = "counter" }]

[[devices]]
id = "pump-1"
kind = "irrigation_pump"
channels = [{ id = "energy", quantity = "energy", kind = "counter" }, { id = "run", quantity = "status", kind = "instant" }]

[[devices]]
id = "grid-1"
kind = "modbus_meter"
channels = [{ id = "imp", quantity = "energy", kind = "counter", flow = "import" }, { id = "raw", quantity = "energy", kind = "counter" }]

[report]
[report.calculations.pv.parameters.ef]
value = "0.5"
unit = "tCO2/MWh"
source = "test"
"#;

fn check(inputs: &str) -> Result<crate::config::GatewayConfig, ConfigError> {
    let text = format!(
        "{BASE}\n[report.calculations.pv]\nmethodology = \"solar_pv\"\ninputs = [{inputs}]\n"
    );
    parse(&text, Path::new("gateway.toml"))
}

#[test]
fn a_correct_binding_validates_and_is_carried_sorted() {
    let c = check(
        r#"{ role = "import", device = "grid-1", channel = "imp" }, { role = "generation", device = "pv-1", channel = "energy" }"#,
    )
    .expect("valid");
    assert_eq!(c.calculations.len(), 1);
    let b: Vec<(&str, &str)> = c.calculations[0]
        .bindings
        .iter()
        .map(|b| (b.role.name(), b.device.as_str()))
        .collect();
    assert_eq!(b, [("generation", "pv-1"), ("import", "grid-1")]);
}

#[test]
fn consumption_bound_as_generation_is_refused_naming_the_input() {
    let e = check(r#"{ role = "generation", device = "pump-1", channel = "energy" }"#).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs[0].role");
    assert!(e.problem.contains("consumption energy"), "{}", e.problem);
    let e = check(
        r#"{ role = "generation", device = "pv-1", channel = "energy" }, { role = "generation", device = "grid-1", channel = "imp" }"#,
    )
    .unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs[1].role");
    assert!(e.problem.contains("import energy"), "{}", e.problem);
}

#[test]
fn unbound_roles_unknown_devices_and_undeclared_channels_are_refused() {
    // Nothing credited: required role unbound.
    let e = check(r#"{ role = "import", device = "grid-1", channel = "imp" }"#).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs");
    assert!(
        e.problem.contains("needs at least one generation"),
        "{}",
        e.problem
    );
    let e = check(r#"{ role = "generation", device = "ghost", channel = "energy" }"#).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs[0].device");
    let e = check(r#"{ role = "generation", device = "pv-1", channel = "power" }"#).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs[0].channel");
    assert!(e.problem.contains("its channels: energy"), "{}", e.problem);
    // Wrong quantity for the role.
    let e = check(r#"{ role = "generation", device = "pump-1", channel = "run" }"#).unwrap_err();
    assert!(e.problem.contains("measures status"), "{}", e.problem);
    // An energy channel without a declared direction.
    let e = check(r#"{ role = "generation", device = "grid-1", channel = "raw" }"#).unwrap_err();
    assert!(
        e.problem.contains("no declared energy direction"),
        "{}",
        e.problem
    );
    // A role the methodology does not take.
    let e = check(r#"{ role = "water_level", device = "pv-1", channel = "energy" }"#).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.inputs[0].role");
    assert!(
        e.problem.contains("is not an input of solar_pv"),
        "{}",
        e.problem
    );
}

#[test]
fn missing_parameters_and_bad_periods_name_their_key() {
    let text = BASE.replace("value = \"0.5\"", "value = \"half\"")
        + "\n[report.calculations.pv]\nmethodology = \"solar_pv\"\ninputs = [{ role = \"generation\", device = \"pv-1\", channel = \"energy\" }]\n";
    let e = parse(&text, Path::new("g.toml")).unwrap_err();
    assert_eq!(e.key, "report.calculations.pv.parameters");
    let text = BASE.replace("[report]\n", "[report]\nperiod_minutes = 7\n")
        + "\n[report.calculations.pv]\nmethodology = \"solar_pv\"\ninputs = [{ role = \"generation\", device = \"pv-1\", channel = \"energy\" }]\n";
    let e = parse(&text, Path::new("g.toml")).unwrap_err();
    assert_eq!(e.key, "report.period_minutes");
}
