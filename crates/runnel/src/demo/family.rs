//! The family's story (the second essay, Figure 4): "my cup is empty" is a fact, not a
//! request; Daddy and Mummy both hear it; Daddy is busy, and when he is back he sees
//! from his own view of the cup that Mummy already refilled it.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Idea, Stage, Story, call, eventually};
use crate::demo::procs::Proc;

/// How long a refill may take to show.
const WAIT: Duration = Duration::from_secs(30);

fn cup(daughter: &Proc) -> Value {
    call(daughter, "GET", "/cup", None).map_or(Value::Null, |a| a.body)
}

fn stats(parent: &Proc) -> Value {
    call(parent, "GET", "/stats", None).map_or(Value::Null, |a| a.body)
}

/// The daughter empties her cup; returns the emptiness' number once someone refilled
/// it (and who), or `None` if nobody did in time.
fn empty_and_wait(daughter: &Proc) -> anyhow::Result<Option<(u64, String)>> {
    let a = call(daughter, "POST", "/cup/empty", Some(json!({})))?;
    let seq = a.body["seq"].as_u64().unwrap_or(0);
    Ok(eventually(WAIT, || {
        let c = cup(daughter);
        (c["refilled_seq"].as_u64() >= Some(seq))
            .then(|| (seq, c["refilled_by"].as_str().unwrap_or("?").to_string()))
    }))
}

fn ready(p: &Proc) -> bool {
    eventually(WAIT, || {
        call(p, "GET", "/health/ready", None)
            .is_ok_and(|a| a.status == 200)
            .then_some(())
    })
    .is_some()
}

/// Runs the story.
pub fn run(stage: &Stage) -> anyhow::Result<Story> {
    let mut s = Story::new("the family and the empty cup");
    let daughter = stage.service("daughter", "0", &[])?;
    let mut mummy = stage.service("mummy", "0", &[("reaction_ms", "0")])?;
    let mut daddy = stage.service("daddy", "0", &[("reaction_ms", "300")])?;
    s.say(Idea::Setup, "the daughter, Mummy and Daddy run as three processes; Mummy and Daddy subscribe separately");

    let Some((seq, by)) = empty_and_wait(&daughter)? else {
        anyhow::bail!("nobody refilled the first cup");
    };
    s.say(
        Idea::Event,
        format!("the daughter says \"my cup is empty\" (emptiness {seq}) to nobody in particular: a fact, not a request"),
    );
    s.say(
        Idea::NoOwner,
        format!("{by} was free and refilled it (cupRefilled)"),
    );
    let heard = eventually(WAIT, || {
        (stats(&mummy)["seen"].as_u64() >= Some(1) && stats(&daddy)["seen"].as_u64() >= Some(1))
            .then_some(())
    })
    .is_some();
    s.say(
        Idea::FanOut,
        "Mummy and Daddy both heard it, each through its own subscription",
    );
    s.check("Daddy and Mummy both see every myCupIsEmpty", heard);

    daddy.stop(Duration::from_secs(15));
    s.say(
        Idea::CatchUp,
        "Daddy is busy chopping chicken (his process is stopped)",
    );
    let mut by_mummy = 0;
    for _ in 0..3 {
        if let Some((seq, by)) = empty_and_wait(&daughter)? {
            s.say(
                Idea::NoOwner,
                format!("the cup is empty again (emptiness {seq}); {by} refilled it"),
            );
            by_mummy += usize::from(by == "mummy");
        }
    }
    s.check("with Daddy away, Mummy refilled every cup", by_mummy == 3);

    daddy.restart()?;
    let back = ready(&daddy);
    s.say(
        Idea::CatchUp,
        "Daddy is back: his view of the cup caught up before he handled anything",
    );
    let settled = eventually(WAIT, || {
        let st = stats(&daddy);
        (st["seen"].as_u64() >= Some(3)).then_some(st)
    });
    let st = settled.unwrap_or(Value::Null);
    for d in st["recent"].as_array().into_iter().flatten() {
        s.say(
            Idea::EventualConsistency,
            format!(
                "Daddy, emptiness {}: {} ({})",
                d["seq"],
                d["action"].as_str().unwrap_or("?"),
                d["why"].as_str().unwrap_or("")
            ),
        );
    }
    s.check(
        "after catch-up Daddy refilled no cup that Mummy already refilled",
        back && st["refilled"].as_u64() == Some(0) && st["disregarded"].as_u64() >= Some(3),
    );

    let grandma = stage.service("grandma", "0", &[("reaction_ms", "0")])?;
    let gr = eventually(WAIT, || {
        let st = stats(&grandma);
        (st["seen"].as_u64() >= Some(4)).then_some(st)
    })
    .unwrap_or(Value::Null);
    s.say(
        Idea::Extensibility,
        format!(
            "Grandma joins without anyone changing: she heard the whole history ({} emptinesses) and refilled none of them",
            gr["seen"]
        ),
    );
    mummy.stop(Duration::from_secs(15));
    daddy.stop(Duration::from_secs(15));
    let last = empty_and_wait(&daughter)?;
    let grandma_refilled = last.as_ref().is_some_and(|(_, by)| by == "grandma");
    s.say(
        Idea::Extensibility,
        format!(
            "Mummy and Daddy are out; the cup is empty again and {} refilled it",
            last.as_ref().map_or("nobody", |(_, by)| by.as_str())
        ),
    );
    s.check(
        "a subscriber added later acts on new facts",
        grandma_refilled && gr["refilled"].as_u64() == Some(0),
    );
    let lag = stage.lag_caught_up("grandma", &["cup"], Duration::from_secs(20));
    s.check(
        format!("grandma caught up with the whole history: lag {lag}"),
        lag == 0,
    );
    let c = cup(&daughter);
    s.note(format!("the cup was empty {} times", c["seq"]));
    s.note(format!(
        "refills that were not needed (both parents at once): {}",
        c["redundant_refills"]
    ));
    s.note(format!(
        "Daddy disregarded {} stale events after his break",
        st["disregarded"]
    ));
    Ok(s)
}
