//! End-to-end tests: the real `eddy` binary against the real local broker
//! with the real plugins. Run them with `cargo xtask test`, which builds the
//! plugins and the binary, starts Kafka and sets:
//! - `EDDY_BIN`: the `eddy` binary;
//! - `EDDY_PLUGIN_DIR`: the example plugins (`target/plugins`);
//! - `EDDY_TEST_PLUGIN_DIR`: the misbehaving test plugins;
//! - `EDDY_KAFKA`: the broker's bootstrap address;
//! - `EDDY_KAFKA_HOME`: where the Kafka jars are, for tests that run a broker of their own;
//! - `EDDY_KAFKA_SASL_SSL`, `EDDY_KAFKA_SSL`: the broker's secured listeners,
//!   and `EDDY_KAFKA_TLS` the folder of their certificates and passwords;
//! - `EDDY_REGISTRY_HOME`: Apicurio Registry's unpacked archive, for tests
//!   that run a schema registry of their own, and `EDDY_PYTHON` a Python
//!   with Confluent's client (`confluent-kafka`) and its JSON Schema serializer;
//! - `EDDY_SEED_PYTHON`: a Python with plain aiokafka, as the seed installs it;
//! - `EDDY_SCAFFOLD_TARGET_DIR`: a cargo target folder for crates `eddy new` makes;
//! - `EDDY_IMAGE`: eddy's container image (`cargo xtask image`), and
//!   `CONTAINERS_CONF` the podman settings it was built with.
//!
//! Every test uses topics and a consumer group of its own, so they run in
//! parallel; where a plugin publishes to a fixed topic, the test picks out
//! its follow-ups by `causation_id`.

mod check;
mod checker;
mod clusters;
mod container;
mod delivery;
mod exactly_once;
mod failures;
mod fleet;
mod harness;
mod hostile;
mod offline;
mod operations;
mod ownership;
mod registry;
mod reload;
mod replay;
mod sandbox;
mod schemas;
mod seed_clients;
mod traces;
