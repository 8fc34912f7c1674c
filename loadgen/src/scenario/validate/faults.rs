//! `[[faults]]`: each fault checked by the chaos crate's own rules (kind, target, the
//! keys its kind takes), and kernel kinds only where the run's hosts are in network
//! namespaces. Which links and hosts exist is the harness's check: it knows the topology.

use flowline_chaos::fault::FaultSpec;

use crate::scenario::isolation::Isolation;

pub(super) fn faults(raw: &[FaultSpec], isolation: Isolation, p: &mut Vec<String>) {
    for (i, f) in raw.iter().enumerate() {
        if let Err(e) = f.validate(i + 1) {
            p.push(e.to_string());
        } else if f.kind.is_kernel() && isolation != Isolation::Netns {
            p.push(format!(
                "fault #{} ({} on {:?}): `{}` is made by the kernel between hosts in network \
                 namespaces, and this run has none: set [cluster] isolation = \"netns\" (or \
                 flowline run --isolation netns, as root)",
                i + 1,
                f.kind.as_str(),
                f.target,
                f.kind.as_str()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::{Isolation, Scenario};

    fn parse(cluster: &str, fault: &str) -> Result<Scenario, String> {
        Scenario::parse(
            "k.toml",
            &format!(
                "[run]\nname = \"k\"\nduration = \"5s\"\n[cluster]\nphase = \"queue\"\n{cluster}\n\
                 [population]\nusers = 10\n[[faults]]\nat = \"1s\"\n{fault}\n"
            ),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn kernel_kinds_need_an_isolated_run() {
        let loss = "kind = \"loss\"\npercent = 5.0\ntarget = \"worker*\"";
        let e = parse("", loss).unwrap_err();
        assert!(
            e.contains("fault #1 (loss on \"worker*\")")
                && e.contains("isolation = \"netns\"")
                && e.contains("--isolation netns"),
            "{e}"
        );
        let s = parse("isolation = \"netns\"", loss).unwrap();
        assert_eq!(s.cluster.isolation, Isolation::Netns);
        // The flag makes a plain file isolated, and the check follows it.
        let plain = parse("", "kind = \"down\"\ntarget = \"node1-redis\"").unwrap();
        assert_eq!(plain.cluster.isolation, Isolation::None);
        let o = crate::scenario::Overrides {
            isolation: Some(Isolation::Netns),
            ..Default::default()
        };
        assert_eq!(plain.apply(&o).unwrap().cluster.isolation, Isolation::Netns);
        let e = parse("isolation = \"vm\"", loss).unwrap_err();
        assert!(e.contains("unknown variant `vm`"), "{e}");
        let e = parse(
            "isolation = \"netns\"\nhttp = [\"http://127.0.0.1:1\"]\nadmin_secret = \"s\"",
            "kind = \"kill\"\ntarget = \"node1\"",
        )
        .unwrap_err();
        assert!(e.contains("external cluster"), "{e}");
    }
}
