use super::*;

#[derive(Debug)]
struct Stats {
    accepted: LocalCounter,
    open: LocalCounter,
    closes: [LocalCounter; 2],
    latency: LocalHistogram,
}

fn buckets() -> Buckets {
    // 100 us, 1 ms, 10 ms, exported in seconds.
    Buckets::new([10_000, 100, 1_000, 100], 1_000_000)
}

fn stats() -> Arc<Stats> {
    Arc::new(Stats {
        accepted: LocalCounter::default(),
        open: LocalCounter::default(),
        closes: Default::default(),
        latency: LocalHistogram::new(&buckets()),
    })
}

fn metrics(threads: &[Arc<Stats>]) -> Metrics {
    let mut m = Metrics::new("gateway");
    m.registry().register_collector(Box::new(
        PerThread::new(threads.to_vec())
            .counter("accepted", "Connections accepted.", |s| s.accepted.get())
            .gauge("connections_open", "Client connections held.", |s| {
                s.open.get()
            })
            .gauge_by_thread(
                "worker_connections_open",
                "Client connections held, by worker thread.",
                "worker",
                |s| s.open.get(),
            )
            .counter_by(
                "closes",
                "Connections closed by reason.",
                "reason",
                ["idle_timeout", "drain"],
                |s, i| s.closes[i].get(),
            )
            .histogram(
                "send_ack_seconds",
                "SEND to SEND_ACK latency.",
                &buckets(),
                |s| &s.latency,
            ),
    ));
    m
}

#[test]
fn a_local_counter_adds_and_wraps() {
    let c = LocalCounter::default();
    c.add(5);
    c.inc();
    c.dec();
    assert_eq!(c.get(), 5);
    let g = LocalCounter::default();
    g.dec();
    assert_eq!(g.get(), u64::MAX);
    g.set(7);
    assert_eq!(g.get(), 7);
}

#[test]
fn observations_land_in_the_first_bucket_at_or_above_them() {
    let b = buckets();
    assert_eq!(b.bounds(), [100, 1_000, 10_000]);
    let h = LocalHistogram::new(&b);
    for v in [0, 100, 101, 1_000, 10_001, u64::MAX / 2] {
        h.observe(v);
    }
    let mut counts = [0u64; 4];
    let sum = h.add_to(&b, &mut counts);
    assert_eq!(counts, [2, 2, 0, 2]);
    assert_eq!(sum, Some(100 + 101 + 1_000 + 10_001 + u64::MAX / 2));
    let other = Buckets::new([5], 1);
    assert_eq!(h.add_to(&other, &mut [0; 2]), None);
    assert_eq!(
        Buckets::exponential(50, 2.0, 4, 1).bounds(),
        [50, 100, 200, 400]
    );
}

#[test]
fn threads_are_summed_at_scrape_time_with_the_tier_prefix() {
    let (a, b) = (stats(), stats());
    let m = metrics(&[a.clone(), b.clone()]);
    a.accepted.add(2);
    b.accepted.inc();
    // One thread's gauge went "negative" (a connection moved): the sum
    // still comes out right.
    a.open.dec();
    b.open.add(3);
    b.closes[1].inc();
    a.latency.observe(50);
    b.latency.observe(2_000);
    b.latency.observe(20_000);
    let text = m.encode(Format::Prometheus).expect("encodes");
    for line in [
        "# TYPE millgate_gateway_accepted_total counter\nmillgate_gateway_accepted_total 3\n",
        "# TYPE millgate_gateway_connections_open gauge\nmillgate_gateway_connections_open 2\n",
        "millgate_gateway_worker_connections_open{worker=\"0\"} -1\n",
        "millgate_gateway_worker_connections_open{worker=\"1\"} 3\n",
        "millgate_gateway_closes_total{reason=\"idle_timeout\"} 0\n",
        "millgate_gateway_closes_total{reason=\"drain\"} 1\n",
        "millgate_gateway_send_ack_seconds_bucket{le=\"0.0001\"} 1\n",
        "millgate_gateway_send_ack_seconds_bucket{le=\"0.001\"} 1\n",
        "millgate_gateway_send_ack_seconds_bucket{le=\"0.01\"} 2\n",
        "millgate_gateway_send_ack_seconds_bucket{le=\"+Inf\"} 3\n",
        "millgate_gateway_send_ack_seconds_sum 0.02205\n",
        "millgate_gateway_send_ack_seconds_count 3\n",
        "# TYPE process_cpu_seconds_total counter\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_open_fds gauge\n",
        "# TYPE process_max_fds gauge\n",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(!text.contains("# EOF"));
}

#[test]
fn openmetrics_is_served_to_a_scraper_that_asks_for_it() {
    let m = metrics(&[stats()]);
    let text = m.encode(Format::OpenMetrics).expect("encodes");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains(
            "# TYPE millgate_gateway_accepted counter\nmillgate_gateway_accepted_total 0\n"
        )
    );
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
    assert!(
        Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4")
    );
}
