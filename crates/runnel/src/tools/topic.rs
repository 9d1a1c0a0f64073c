//! `runnel topic create|list|describe|delete|alter-config`, with the flags of
//! kafka-topics and rpk.

use rdkafka::admin::{AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;

use super::{Connection, Failure, REQUEST_TIMEOUT, admin_options, key_value, partitions_of};

/// The topic commands.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "EXAMPLES:
    runnel topic create orders --partitions 4
    runnel topic create customers --config cleanup.policy=compact --config retention.ms=-1")]
    Create {
        /// Topic name: letters, digits, '.', '_' and '-', at most 249 characters.
        name: String,
        /// Partitions [default: the broker's default].
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// A topic setting, repeatable: --config retention.ms=3600000
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics with their partition counts.
    List,
    /// Show a topic's partitions, offsets and settings.
    Describe {
        /// The topic.
        name: String,
    },
    /// Delete a topic and all its records.
    Delete {
        /// The topic.
        name: String,
    },
    /// Change a topic's settings.
    #[command(after_help = "EXAMPLES:
    runnel topic alter-config orders --set retention.ms=86400000")]
    AlterConfig {
        /// The topic.
        name: String,
        /// A setting to change, repeatable: --set retention.ms=86400000
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
}

/// Runs a topic command on a runtime of its own (admin requests are async).
pub fn run_blocking(conn: &Connection, cmd: TopicCommand) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::refused(format!("cannot start a runtime: {e}")))?;
    rt.block_on(run(conn, cmd))
}

/// Runs a topic command.
pub async fn run(conn: &Connection, cmd: TopicCommand) -> Result<(), Failure> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => create(conn, &name, partitions, &configs).await,
        TopicCommand::List => list(conn),
        TopicCommand::Describe { name } => describe(conn, &name).await,
        TopicCommand::Delete { name } => delete(conn, &name).await,
        TopicCommand::AlterConfig { name, set } => alter(conn, &name, &set).await,
    }
}

async fn create(
    conn: &Connection,
    name: &str,
    partitions: Option<i32>,
    configs: &[String],
) -> Result<(), Failure> {
    if partitions.is_some_and(|p| p < 1) {
        return Err(Failure::usage("--partitions must be at least 1"));
    }
    let pairs = configs
        .iter()
        .map(|c| key_value(c, "--config"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut topic = NewTopic::new(name, partitions.unwrap_or(-1), TopicReplication::Fixed(-1));
    for (k, v) in &pairs {
        topic = topic.set(k, v);
    }
    let admin = conn.admin()?;
    let results = admin
        .create_topics([&topic], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot create the topic", e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            println!("created topic {name}");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Err(Failure::refused(format!(
            "topic {name:?} already exists (see `runnel topic describe {name}`)"
        ))),
        Some(Err((_, code))) => Err(Failure::refused(format!(
            "cannot create topic {name:?}: {code}"
        ))),
        None => Err(Failure::refused("the broker gave no answer")),
    }
}

fn list(conn: &Connection) -> Result<(), Failure> {
    let md = conn.metadata(None)?;
    let mut topics: Vec<(&str, usize)> = md
        .topics()
        .iter()
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    topics.sort_unstable();
    println!("{:<40} PARTITIONS", "TOPIC");
    for (name, partitions) in topics {
        println!("{name:<40} {partitions}");
    }
    Ok(())
}

async fn describe(conn: &Connection, name: &str) -> Result<(), Failure> {
    let partitions = partitions_of(conn, name)?;
    let consumer = conn.consumer(None)?;
    println!("topic {name}: {} partitions", partitions.len());
    println!(
        "{:>9} {:>14} {:>14} {:>12}",
        "PARTITION", "LOW", "HIGH", "RECORDS"
    );
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(name, *p, REQUEST_TIMEOUT)
            .map_err(|e| Failure::broker(conn, "cannot read offsets", e))?;
        println!("{p:>9} {low:>14} {high:>14} {:>12}", high - low);
    }
    let admin = conn.admin()?;
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot read the topic's settings", e))?;
    if let Some(Ok(resource)) = configs.into_iter().next() {
        println!("settings (* = set for this topic):");
        let mut entries: Vec<_> = resource.entries.iter().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let own = matches!(e.source, ConfigSource::DynamicTopic);
            println!(
                "  {}{} = {}",
                if own { "*" } else { " " },
                e.name,
                e.value.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn delete(conn: &Connection, name: &str) -> Result<(), Failure> {
    let admin = conn.admin()?;
    let results = admin
        .delete_topics(&[name], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot delete the topic", e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            println!("deleted topic {name}");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => Err(Failure::not_found(
            format!("topic {name:?} does not exist (see `runnel topic list`)"),
        )),
        Some(Err((_, code))) => Err(Failure::refused(format!(
            "cannot delete topic {name:?}: {code}"
        ))),
        None => Err(Failure::refused("the broker gave no answer")),
    }
}

async fn alter(conn: &Connection, name: &str, set: &[String]) -> Result<(), Failure> {
    partitions_of(conn, name)?;
    let pairs = set
        .iter()
        .map(|c| key_value(c, "--set"))
        .collect::<Result<Vec<_>, _>>()?;
    let admin = conn.admin()?;
    // AlterConfigs replaces a topic's settings as a whole, so the ones already set are
    // sent again alongside the change.
    let current = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot read the topic's settings", e))?;
    let mut wanted: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    if let Some(Ok(resource)) = current.into_iter().next() {
        for e in &resource.entries {
            if matches!(e.source, ConfigSource::DynamicTopic) {
                wanted.insert(e.name.clone(), e.value.clone().unwrap_or_default());
            }
        }
    }
    wanted.extend(pairs.iter().cloned());
    let mut change = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in &wanted {
        change = change.set(k, v);
    }
    let results = admin
        .alter_configs([&change], &admin_options())
        .await
        .map_err(|e| Failure::broker(conn, "cannot change the topic's settings", e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            // rust-rdkafka reports every AlterConfigs resource as a success, whatever the
            // broker answered; read the settings back to know.
            let after = admin
                .describe_configs([&ResourceSpecifier::Topic(name)], &admin_options())
                .await
                .map_err(|e| Failure::broker(conn, "cannot read the topic's settings", e))?;
            let now: std::collections::BTreeMap<String, String> = match after.into_iter().next() {
                Some(Ok(r)) => r
                    .entries
                    .iter()
                    .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                    .collect(),
                _ => Default::default(),
            };
            let refused: Vec<String> = pairs
                .iter()
                .filter(|(k, v)| now.get(k) != Some(v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !refused.is_empty() {
                return Err(Failure::refused(format!(
                    "the broker did not apply {} (an unknown setting or an invalid value; \
                     see `runnel topic describe {name}` for the settings it knows)",
                    refused.join(", ")
                )));
            }
            println!("updated {} setting(s) of {name}", pairs.len());
            Ok(())
        }
        Some(Err((_, code))) => Err(Failure::refused(format!(
            "cannot change the settings of {name:?}: {code}"
        ))),
        None => Err(Failure::refused("the broker gave no answer")),
    }
}
