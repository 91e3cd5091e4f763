#!/usr/bin/env python3
"""Puts back one fault for tests/mutations/run: `mutate.py NAME` edits src/ in place."""
import sys

name = sys.argv[1]
p = 'src/publish/mod.rs'
s = open(p).read()
def sub(path, old, new):
    t = open(path).read()
    assert old in t, (name, old)
    open(path, 'w').write(t.replace(old, new, 1))
if name == "backlog":   # keep every message while away, replay them all on connect
    sub(p, "        self.pending.remove(&topic); // superseded\n", "")
    sub(p, "            self.pending.insert(topic, msg);\n        }\n    }\n\n    /// Offers what waits",
           "            static N: AtomicU64 = AtomicU64::new(0);\n            self.pending.insert(format!(\"{topic}\\u{0}{:012}\", N.fetch_add(1, Ordering::Relaxed)), msg);\n        }\n    }\n\n    /// Offers what waits")
    sub(p, ".into_iter().filter(|(_, m)| !m.retain).collect();", ".into_iter().collect();")
    sub(p, "fn try_send(client: Option<&Client>, topic: &str, m: &Message) -> bool {\n",
           "fn try_send(client: Option<&Client>, topic: &str, m: &Message) -> bool {\n    let topic = topic.split('\\u{0}').next().unwrap();\n")
elif name == "blocking":   # publish blocks until the link takes it
    sub(p, "    client.is_some_and(|c| c.try_publish(topic, m.qos, m.retain, m.payload.clone()).is_ok())",
           "    client.is_some_and(|c| c.publish(topic, m.qos, m.retain, m.payload.clone()).is_ok())")
elif name == "unbounded":  # the client queue holds everything
    sub(p, "const CLIENT_QUEUE: usize = 16;", "const CLIENT_QUEUE: usize = 100_000;")
elif name == "tls-fatal":  # a TLS failure ends the daemon
    sub(p, "                        if e != last_error {\n", "                        if e.starts_with(\"TLS\") { std::process::exit(1); }\n                        if e != last_error {\n")
elif name == "no-offline": # SIGTERM drops the connection: only the will says offline
    sub(p, "            let _ = client.try_publish(self.topic(\"status\"), QoS::AtLeastOnce, true, \"offline\");\n            let _ = client.try_disconnect();\n", "            drop(client);\n")
elif name == "subscribe-once":
    sub(p, "            let _ = client.try_subscribe(format!(\"{prefix}/{command}\"), QoS::AtLeastOnce);\n",
           "            if self.reconnects.load(Ordering::Relaxed) == 0 {\n                let _ = client.try_subscribe(format!(\"{prefix}/{command}\"), QoS::AtLeastOnce);\n            }\n")
elif name == "retain-all": # passing messages retained too
    sub(p, "        self.send(suffix, Message { payload, retain: false, qos: QoS::AtMostOnce });",
           "        self.send(suffix, Message { payload, retain: true, qos: QoS::AtMostOnce });")
elif name == "ready-needs-broker":
    sub('src/pipeline.rs', "(Counters::get(&self.c.frames_in) > 0 || self.started.elapsed() >= READY_WITHIN)",
        "(Counters::get(&self.c.frames_in) > 0 && self.publisher.is_connected())")
elif name == "no-hold-off":
    sub('src/pipeline.rs', "if since.elapsed() < self.opts.hold_off || !rate_ok {", "if !rate_ok {")
elif name == "no-max-rate":
    sub('src/pipeline.rs', "if since.elapsed() < self.opts.hold_off || !rate_ok {", "if since.elapsed() < self.opts.hold_off {")
elif name == "in-place":
    sub('src/cache/build.rs', "    let tmp = dir.join(format!(\"{}{}\", temp_prefix(path), std::process::id()));\n",
        "    let tmp = dir.join(format!(\"{}{}\", temp_prefix(path), std::process::id()));\n    if !path.is_dir() { return std::fs::write(path, bytes).map_err(fail); }\n")
elif name == "ties-count":
    sub('src/eval.rs', "self.fitb_correct += d[1..4].iter().all(|&n| d[0] < n) as usize;", "self.fitb_correct += d[1..4].iter().all(|&n| d[0] <= n) as usize;")
elif name == "crop-off-by-one":
    sub('src/eval.rs', "let crop = to_pixels(trial.query, scene.width(), scene.height());",
        "let mut crop = to_pixels(trial.query, scene.width(), scene.height());\n        crop.width = crop.width.saturating_sub(1).max(1);")
elif name == "frame-wraps":
    sub('src/preprocess/pixel.rs', "    if w > super::MAX_SIDE || h > super::MAX_SIDE {", "    if false {")
elif name == "kiosk-worker-timers":  # MQTT.js's default timers, which the page's CSP refuses
    sub('src/kiosk/static/kiosk.js', '      timerVariant: "native",\n', '')
elif name == "kiosk-path-id":  # an id with a path in it is looked up as it is
    sub('src/kiosk/table.rs', '    } else if id.contains([\'/\', \'\\\\\']) {', '    } else if false {')
    sub('src/kiosk/table.rs', '    } else if id.contains("..") {', '    } else if false {')
elif name == "kiosk-open-broker":  # the embedded broker takes anyone, password or not
    sub(p, "                server.connections.auth = Some(users.clone());", "                let _ = &users;")
elif name == "kiosk-exposed-anonymous":  # a listener beyond loopback starts without a password
    sub('src/config.rs', "            m.username.is_some() && m.password_file.is_some(),", "            true,")
elif name == "stock-ignored":  # the stock mask is computed but ranking does not use it
    sub('src/recommend.rs', "        scores.retain(|s| mask[s.index]);", "        let _ = mask;")
elif name == "fleet-no-sha":  # a fetched file is taken without comparing its sha256
    sub('src/update.rs', "    if sha != f.sha256 {", "    if false {")
elif name == "fleet-foreign-fetched":  # a catalog for another model is downloaded before it is refused
    sub('src/update.rs', "    if f.fingerprint != ours {", "    if f.fingerprint != ours && false {")
elif name == "swap-keeps-table":  # a new catalog leaves the stock mask of the old one
    sub('src/pipeline.rs', "        self.engine.restock();\n        let cache = &self.engine.cache;", "        let cache = &self.engine.cache;")
elif name == "swap-keeps-kiosk":  # the kiosk's listener keeps serving the old catalog's products
    sub('src/pipeline.rs', "            *k.table.write().unwrap_or_else(|e| e.into_inner()) = table;", "            drop(table);")
elif name == "fleet-first-start-embeds":  # a new fleet mirror never asks the fleet at start
    sub('src/cli/run.rs', "    let fleet = config.fleet.as_ref()?;", "    let fleet = config.fleet.as_ref().filter(|_| false)?;")
elif name == "fetch-no-stream-limit":  # the size is checked against Content-Length only
    sub('src/fetch.rs', "        if self.bytes > self.limit {\n            return Err(self.too_large(", "        if false {\n            return Err(self.too_large(")
elif name == "fetch-no-deadline":  # the total deadline is gone: a trickling server holds the fetch
    sub('src/fetch.rs', "tokio::time::timeout(limits.total, http_get(url, limits, &mut out)).await",
        "Ok::<_, ()>(http_get(url, limits, &mut out).await)")
elif name == "fetch-no-connect-timeout":  # a connect waits as long as the kernel does
    sub('src/fetch.rs', "    let tcp = match tokio::time::timeout(limits.connect, connect).await {",
        "    let tcp = match Ok::<_, ()>(connect.await) {")
elif name == "fetch-follows-redirect":  # a 3xx answer's body is taken as the file
    sub('src/fetch.rs', "    if status != hyper::StatusCode::OK {", "    if status != hyper::StatusCode::OK && !status.is_redirection() {")
elif name == "topk-before-stock":  # the top K is taken first and the unavailable dropped after
    sub('src/recommend.rs', "        scores.retain(|s| mask[s.index]);\n",
        "        let m = mask.to_vec();\n        let mut b = rank::top_k(scores, top, |i| rows[i].entry.id.as_str());\n        b.retain(|s| m[s.index]);\n        scores = b;\n")
elif name == "kiosk-frozen-grid":  # the screen keeps the first ranking of each category
    sub('src/kiosk/static/kiosk.js', "      state.recs[slug] = body;\n", "      state.recs[slug] ??= body;\n")
elif name == "kiosk-no-pings":  # the page connects with a keep-alive but never pings
    sub('src/kiosk/static/kiosk.js', "    client = mqtt.connect(url, options);\n", "    client = mqtt.connect(url, options);\n    client.sendPing = () => {};\n")
elif name == "kiosk-no-portrait":  # the portrait media rule is gone: five narrow columns standing
    sub('src/kiosk/static/kiosk.css', "@media (orientation: portrait) { #grid { grid-template-columns: repeat(2, 1fr); } }\n", "")
elif name == "kiosk-no-price":  # the price is left blank
    sub('src/kiosk/static/kiosk.js', "      price.textContent = priceOf(item);\n", "      price.textContent = \"\";\n")
elif name == "kiosk-ids-as-titles":  # the card shows the product's id, not its title
    sub('src/kiosk/static/kiosk.js', "      title.textContent = titleOf(item);\n", "      title.textContent = item.id;\n")
elif name == "kiosk-no-age":  # the ranking's age is never shown
    sub('src/kiosk/static/kiosk.js', '    $("age").textContent = age < 2 ? "updated just now" : `updated ${age} s ago`;\n', '    $("age").textContent = "";\n')
elif name == "kiosk-login-ignored":  # the form's password is stored but never used to connect
    sub('src/kiosk/static/kiosk.js', "    if (client) client.end(true);\n    connect(typed);\n", "")
elif name == "kiosk-one-connection":  # the kiosk serves one connection at a time
    sub('src/kiosk/mod.rs', "const MAX_CONNECTIONS: usize = 64;", "const MAX_CONNECTIONS: usize = 1;")
elif name == "kiosk-unbounded-connections":  # the kiosk serves any number at once
    sub('src/kiosk/mod.rs', "const MAX_CONNECTIONS: usize = 64;", "const MAX_CONNECTIONS: usize = 100_000;")
elif name == "kiosk-sniffable":  # the answers lose nosniff and the referrer policy
    sub('src/kiosk/mod.rs', "    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static(\"nosniff\"));\n", "")
    sub('src/kiosk/mod.rs', "    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static(\"no-referrer\"));\n", "")
elif name == "fleet-redelivery-refetches":  # an announcement of the catalog served is fetched again
    sub('src/pipeline.rs', "        if !again && f.sha256 == self.engine.identity.sha256 {", "        if false && f.sha256 == self.engine.identity.sha256 {")
elif name == "fleet-reload-skips":  # a reload of a fleet mirror skips the catalog it serves
    sub('src/pipeline.rs', "            return self.fleet(f, topic, true, supervisor);", "            return self.fleet(f, topic, false, supervisor);")
elif name == "fleet-version-forgotten":  # the fleet's version is not remembered beside the cache
    sub('src/update.rs', "    if let Err(e) = write_atomically(&version_path(&s.cache), record.to_string().as_bytes()) {",
        "    if let Err(e) = Ok::<(), String>(()).map(|_| drop(record)) {")
elif name == "stock-any-field":  # a product passing one field of the filter passes it all
    sub('src/stock.rs', "    filter.iter().all(|(field, values)| {", "    filter.is_empty() || filter.iter().any(|(field, values)| {")
elif name == "stock-one-spelling":  # only `no` marks a product out of stock in the column
    sub('src/stock.rs', '["no", "false", "0", "n", "out"].contains(&v.as_str())', '["no"].contains(&v.as_str())')
elif name == "reload-embeds-all":  # a reload embeds every image again, not only the new ones
    sub('src/cache/build.rs', "        if let Some((global, key)) = previous.get(&image_sha256) {", "        if let Some((global, key)) = previous.get(&image_sha256).filter(|_| false) {")
elif name == "reload-untold":  # systemd is not told that a reload runs
    sub('src/cli/run.rs', '            Notice::Reloading => return notify("RELOADING=1\\nSTATUS=making a new catalog"),',
        '            Notice::Reloading => return,')
elif name == "nv12-rows-flipped":  # the NV12 path's resized luma upside down (a vertical error)
    sub('src/preprocess/pixel.rs', "            let uv = RawPlane { bytes: &p[luma..luma + 2 * chroma], width: cw, height: ch, channels: 2 };\n",
        "            let y: Vec<u8> = y.chunks_exact(width as usize).rev().flatten().copied().collect();\n            let uv = RawPlane { bytes: &p[luma..luma + 2 * chroma], width: cw, height: ch, channels: 2 };\n")
else:
    raise SystemExit("unknown mutation " + name)
