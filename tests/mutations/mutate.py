#!/usr/bin/env python3
"""Puts back one fault for tests/mutations/run: `mutate.py NAME` edits src/ in place."""
import sys

name = sys.argv[1]
p = 'src/publish/mod.rs'
s = open(p).read()
def sub(path, old, new):
    """Replaces the first `old` in `path`; where code has moved since the mutation was written
    (src/pipeline.rs is a folder now), in the one file of src/ that holds it."""
    import glob, os
    if not (os.path.exists(path) and old in open(path).read()):
        found = [f for f in glob.glob('src/**/*.rs', recursive=True) + glob.glob('src/**/*.js', recursive=True)
                 if old in open(f).read()]
        assert len(found) == 1, (name, path, found, old)
        path = found[0]
    t = open(path).read()
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
    sub('src/eval/mod.rs', "let correct = d[1..4].iter().all(|&n| d[0] < n);", "let correct = d[1..4].iter().all(|&n| d[0] <= n);")
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
    sub('src/update.rs', "    if sha != want_sha {", "    if false {")
elif name == "fleet-foreign-fetched":  # a catalog for another model is downloaded before it is refused
    sub('src/update.rs', "        if f.fingerprint != ours {", "        if f.fingerprint != ours && false {")
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
        "        let m = mask.to_vec();\n        let mut b = rank::top_k(scores, ranking.top, |i| rows[i].entry.id.as_str());\n        b.retain(|s| m[s.index]);\n        scores = b;\n")
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
    sub('src/pipeline/commands.rs', "        if !again && f.sha256 == self.engine.identity.sha256 && same_model {", "        if false && f.sha256 == self.engine.identity.sha256 && same_model {")
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
elif name == "no-websocket":  # the embedded broker never opens its WebSocket listener
    sub(p, "    if let Some(ws) = websocket {", "    if let Some(ws) = websocket.filter(|_| false) {")
elif name == "password-logged":  # the MQTT password reaches the debug log
    sub('src/cli/run.rs', "        (Some(u), Some(p)) => Some((u.clone(), p)),", "        (Some(u), Some(p)) => {\n            log::debug!(\"logging in as {u} with {p}\");\n            Some((u.clone(), p))\n        }")
elif name == "credentials-ignored":  # a relative password file is read from the working directory
    sub('src/config.rs', "        Some(dir) if !dir.as_os_str().is_empty() => Ok(dir.join(path)),", "        Some(dir) if !dir.as_os_str().is_empty() => Ok(path.to_path_buf()),")
elif name == "prefix-ignored":  # topics are not under the configured prefix
    sub(p, '        format!("{}/{suffix}", self.settings.prefix)', '        format!("lookd/{suffix}")')
elif name == "command-over-limit":  # a command payload of any size is decoded
    sub('src/publish/payload.rs', "    if payload.len() > limit {\n        return Err(format!(\"payload of", "    if false {\n        return Err(format!(\"payload of")
elif name == "kiosk-big-heads":  # the kiosk reads request heads of any size
    sub('src/kiosk/mod.rs', "                .max_buf_size(MAX_HEAD)", "                .max_buf_size(1024 * 1024)")
elif name == "kiosk-no-head-timeout":  # an idle connection is held for an hour
    sub('src/kiosk/mod.rs', "                .header_read_timeout(HEAD_TIMEOUT)", "                .header_read_timeout(Duration::from_secs(3600))")
elif name == "kiosk-post-served":  # any method gets the page
    sub('src/kiosk/mod.rs', '        .route("/", get(|| async {', '        .route("/", axum::routing::any(|| async {')
elif name == "kiosk-never-offline":  # the page never says offline
    sub('src/kiosk/static/kiosk.js', '    if (!state.connected) setState("offline", "offline: no broker");\n    else if (!state.online) setState("offline", "offline");\n    else setState("online", "online");', '    setState("online", "online");')
elif name == "camera-gives-up":  # a second camera error ends capture for good
    sub('src/pipeline.rs', "                Counters::bump(&c.camera_errors);\n                if !failing {", "                Counters::bump(&c.camera_errors);\n                if failing {\n                    break;\n                }\n                if !failing {")
elif name == "camera-errors-uncounted":  # a read error is retried but not counted
    sub('src/pipeline.rs', "                Counters::bump(&c.camera_errors);\n                if !failing {", "                if !failing {")
elif name == "bad-frames-uncounted":  # a frame that cannot be converted is dropped without a count
    sub('src/pipeline.rs', "                Counters::bump(&self.c.frames_bad);\n                log::debug!(\"frame {} dropped", "                log::debug!(\"frame {} dropped")
elif name == "frames-dropped-uncounted":  # a frame overwritten in the slot is not counted
    sub('src/pipeline.rs', "                if slot.put(frame) {\n                    Counters::bump(&c.frames_dropped);\n                }", "                let _ = slot.put(frame);")
elif name == "stall-starves-watchdog":  # the loop sleeps a second whenever no frame came
    sub('src/pipeline.rs', "                None if capture_over => break,\n                None => {}", "                None if capture_over => break,\n                None => std::thread::sleep(Duration::from_secs(1)),")
elif name == "odd-frames-refused":  # a frame of odd width or height is refused
    sub('src/pipeline.rs', "        let img = match self.convert(&frame) {", "        if frame.width % 2 == 1 || frame.height % 2 == 1 {\n            Counters::bump(&self.c.frames_bad);\n            return None;\n        }\n        let img = match self.convert(&frame) {")
elif name == "photo-no-side-limit":  # a photo of any width is decoded
    sub('src/preprocess/mod.rs', "    limits.max_image_width = Some(MAX_SIDE);\n    limits.max_image_height = Some(MAX_SIDE);\n", "")
elif name == "yuyv-odd-width":  # the bug the frame fuzzer found: a YUYV row of odd width is 2w bytes
    sub('src/capture/mod.rs', "            PixelFormat::Yuyv => Some(w.div_ceil(2) * 4),", "            PixelFormat::Yuyv => Some(w * 2),")
elif name == "frame-leak":  # 16 KiB kept for good with every frame
    sub('src/pipeline.rs', "fn handle_frame(&mut self, frame: Frame) -> Option<()> {\n", "fn handle_frame(&mut self, frame: Frame) -> Option<()> {\n        std::mem::forget(vec![1u8; 16 * 1024]);\n")
elif name == "cache-no-crc":  # the cache's CRC-32 is not compared
    sub('src/cache/codec.rs', "    if hasher.finalize().to_le_bytes() != crc {", "    if hasher.finalize().to_le_bytes() != crc && false {")
elif name == "cache-count-unchecked":  # the metadata's product count is not compared with the header's
    sub('src/cache/codec.rs', "    if meta.products.len() != h.count {", "    if false {")
elif name == "partial-ignored":  # a killed first build starts again from nothing
    sub('src/cache/build.rs', "    let mut previous = previous_embeddings(&partial, &fingerprint);\n", "    let mut previous = previous_embeddings(&partial, &fingerprint);\n    previous.clear();\n")
elif name == "ready-waits-for-catalog":  # a first start says READY only once its catalog is built
    sub('src/pipeline/frames.rs', "            if !announced && (", "            if !announced && self.building.is_none() && (")
elif name == "kiosk-no-progress":  # the page never says that the catalog is being prepared
    sub('src/kiosk/static/kiosk.js', '    const prog = c && c.state === "building" && c.progress;', '    const prog = false;')
elif name == "bad-row-line-lost":  # a bad CSV row is reported without its line
    sub('src/catalog.rs', ".map_or(i as u64 + 2, |p| p.line());", ".map_or(0, |_| 0);")
elif name == "manifest-hash-unchecked":  # a graph is loaded whatever its sha256
    sub('src/model/mod.rs', "        if !actual.eq_ignore_ascii_case(sha256) {", "        if false {")
elif name == "bad-config-exit-1":  # a bad configuration exits 1, which systemd restarts
    sub('src/cli/mod.rs', "    pub const CONFIG: i32 = 78;", "    pub const CONFIG: i32 = 1;")
elif name == "update-failure-silent":  # a failed reload or fleet update says nothing on /error
    sub('src/pipeline.rs', "                    self.refuse(&topic, error);\n                    supervisor(Notice::Reloaded);", "                    let _ = (topic, error);\n                    supervisor(Notice::Reloaded);")
elif name == "fleet-subscribe-once":  # the fleet topic is subscribed on the first connection only
    sub(p, "        if let Some(fleet) = &self.settings.fleet_topic {\n            let _ = client.try_subscribe(", "        if let Some(fleet) = self.settings.fleet_topic.as_ref().filter(|_| self.reconnects.load(Ordering::Relaxed) == 0) {\n            let _ = client.try_subscribe(")
elif name == "fleet-ca-ignored":  # the chain's CA file is not used: the system's roots only
    sub('src/fetch.rs', "    match ca {\n        Some(pem) => {", "    match ca.filter(|_| false) {\n        Some(pem) => {")
elif name == "filter-unknown-field-accepted":  # a filter on a field no product has is taken
    sub('src/stock.rs', "        if !products.iter().any(|p| p.entry.fields.contains_key(field)) {", "        if false {")
elif name == "mjpg-no-fallback":  # a format the camera lacks is an error, not a fallback
    sub('src/capture/v4l.rs', "        Err(why) if wanted.is_some() => {", "        Err(why) if false => {")
elif name == "driver-size-ignored":  # frames are read at the asked size, not the size the driver set
    sub('src/capture/v4l.rs', "        Ok(Open { stream, format, width: got.width, height: got.height, stride: got.stride })", "        Ok(Open { stream, format, width: self.width, height: self.height, stride: got.stride })")
elif name == "exact-scores-by-default":  # every ranked product's distances published unless turned off
    sub('src/config.rs', "        RawPrivacy { exact_scores: false,", "        RawPrivacy { exact_scores: true,")
elif name == "scene-kept":  # the last scene is never forgotten
    sub('src/pipeline.rs', "fn forget_if_stale(&mut self) {\n", "fn forget_if_stale(&mut self) {\n        #[allow(clippy::needless_return)]\n        return;\n")
elif name == "ms-timestamps":  # published times to the millisecond
    sub('src/pipeline.rs', "    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)", "    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)")
elif name == "frame-saved":  # the last frame written to a file
    sub('src/pipeline.rs', "fn handle_frame(&mut self, frame: Frame) -> Option<()> {\n", "fn handle_frame(&mut self, frame: Frame) -> Option<()> {\n        let _ = std::fs::write(std::env::temp_dir().join(\"lookd-last-frame\"), &frame.pixels);\n")
elif name == "extra-peer":  # lookd opens a connection to a third party with each ranking
    sub('src/pipeline.rs', "fn publish_recommendations(&mut self, started: Instant) {\n", "fn publish_recommendations(&mut self, started: Instant) {\n        let _ = std::net::TcpStream::connect((\"127.0.0.1\", 9));\n")
elif name == "network-allow-keeps-ranges":  # the drop-in adds to the packaged private ranges instead of replacing them
    sub('src/cli/config.rs', "[Service]\\nIPAddressDeny=any\\nIPAddressAllow=\\nIPAddressAllow=localhost\\n", "[Service]\\nIPAddressDeny=any\\nIPAddressAllow=localhost\\n")
elif name == "kiosk-no-notice":  # the page never shows the camera notice
    sub('src/kiosk/static/kiosk.js', '  $("notice").hidden = !settings.notice;', '  $("notice").hidden = true;')
elif name == "layering-broken":  # the catalog thread takes the hand-off from the loop again
    sub('src/update.rs', "use crate::slot::Slot;", "use crate::pipeline::Slot;")
elif name == "metrics-frames-unread":  # /metrics reports no frame
    sub('src/cli/run.rs', "                frames_in: get(&c.frames_in),", "                frames_in: 0,")
elif name == "stage-latency-unobserved":  # the latency histograms are never fed
    sub('src/pipeline/frames.rs', "                o.observe(stage, v);", "                let _ = (o, stage, v);")
elif name == "bootstrap-by-trial":  # the bootstrap draws trials, as if a scene's trials were independent
    sub('src/eval/mod.rs', "        let i = *index.entry(o.scene).or_insert_with(|| {", "        let i = *index.entry(per.len() as u32).or_insert_with(|| {")
elif name == "variety-forgets-picks":  # the re-rank never compares a candidate with what it picked
    sub('src/rank.rs', "            *c = c.max(dot(row(&ranked[i]), row(&picked)));", "            *c = c.max(0.0 * dot(row(&ranked[i]), row(&picked)));")
elif name == "variety-whole-category":  # the re-rank chooses from the whole category, not its head
    sub('src/recommend.rs', "    Ok(rank::top_k(scores, top.saturating_mul(rank::HEAD), |i| rows[i].entry.id.as_str()))", "    Ok(rank::top_k(scores, usize::MAX, |i| rows[i].entry.id.as_str()))")
elif name == "hubs-ignored":  # a model's mean scene is read but never corrects the ranking
    sub('src/recommend.rs', "        rank::correct_hubs(&mut scores, cache.globals(category), cache.dim(), mean);\n", "")
elif name == "hub-distance-published":  # the published distance is the corrected ranking key
    sub('src/recommend.rs', "                distance: rank::plain_distance(s),", "                distance: s.distance,")
elif name == "mean-scene-width-unchecked":  # a mean scene of any width is taken
    sub('src/model/mod.rs', "    if mean.len() != dim {", "    if mean.len() != dim && false {")
elif name == "loop-ignores-diversity":  # the daemon ranks by distance whatever [pipeline] diversity says
    sub('src/pipeline/frames.rs', "            diversity: self.opts.diversity,", "            diversity: 0.0,")
elif name == "loop-ignores-hubs":  # the daemon never applies the model's mean scene
    sub('src/pipeline/frames.rs', "            mean_scene: self.engine.folder.mean_scene().filter(|_| self.opts.correct_hubs),", "            mean_scene: None,")
elif name == "loop-ignores-exposure":  # the daemon never adds the cache's exposure offsets
    sub('src/pipeline/frames.rs', "            exposure: self.opts.cap_exposure,", "            exposure: false,")
elif name == "exposure-uncounted":  # the exposure calibration never sees a product listed
    sub('src/rank.rs', "            for s in diversify(&keyed, plan.top, plan.diversity, globals, dim) {\n                counts[s.index] += 1;", "            for s in diversify(&keyed, plan.top, plan.diversity, globals, dim) {\n                counts[s.index] += 0;")
elif name == "scenes-unchecksummed":  # a corrupt reference-scenes file is read as good
    sub('src/model/scenes.rs', "        if crc32fast::hash(body).to_le_bytes() != crc {", "        if crc32fast::hash(body).to_le_bytes() != crc && false {")
elif name == "exposure-offsets-unchecked":  # a cache with the wrong number of exposure offsets opens
    sub('src/cache/codec.rs', "        if e.offsets.len() != h.count || e.offsets.iter().any(|o| !o.is_finite()) {", "        if false {")
elif name == "share-never-held":  # the share cap never holds a product back
    sub('src/rotation.rs', "        self.counts.get(id).copied().unwrap_or(0) >= self.limit()", "        self.counts.get(id).copied().unwrap_or(0) >= usize::MAX")
elif name == "same-shopper-counted-twice":  # every ranking is a new shopper, however alike
    sub('src/rotation.rs', "            !unshared.is_empty() && 2 * kept", "            false && 2 * kept")
elif name == "loop-ignores-share":  # the daemon never applies [pipeline] max-share
    sub('src/pipeline/frames.rs', "            rotation,\n            Look::Guess,", "            None,\n            Look::Guess,")
elif name == "diversity-unchecked":  # any [pipeline] diversity is taken
    sub('src/config.rs', "            crate::rank::DIVERSITY.contains(&p.diversity),", "            true,")
elif name == "fleet-model-unreferenced":  # a fleet model is taken without its reference check
    sub('src/update.rs', "    outputs.into_iter().find(|(_, diff)| diff.is_nan() || *diff > REFERENCE_TOLERANCE)", "    outputs.into_iter().find(|_| false)")
elif name == "fleet-model-misnamed":  # an archive holding another model than the one announced is taken
    sub('src/update.rs', "        if id != m.name {", "        if id != m.name && false {")
elif name == "fleet-model-left-behind":  # a model refused for its catalog stays unpacked on disk
    sub('src/update.rs', "        if let Some(dir) = incoming {\n            remove_dir_if_there(&dir);", "        if let Some(dir) = incoming {\n            drop(dir);")
elif name == "fleet-model-old-scene":  # the swap takes the new model's catalog but keeps embedding scenes with the old one
    sub('src/pipeline/commands.rs', "            self.engine.scene = m.scene;", "            drop(m.scene);")
elif name == "fleet-model-forgotten":  # a restarted mirror runs the packaged model, not the one it last took
    sub('src/cli/run.rs', "    let (folder, model_archive) = match lookd::update::last_model(&config.cache) {", "    let (folder, model_archive) = match None::<(ModelFolder, String)> {")
elif name == "fleet-model-redelivery-refetches":  # an announcement of the model running fetches it again
    sub('src/pipeline/commands.rs', "            f.model.as_ref().is_none_or(|m| self.engine.model_archive.as_ref() == Some(&m.sha256));", "            f.model.is_none();")
elif name == "building-starves-watchdog":  # the loop stops feeding the watchdog while a catalog builds
    sub('src/pipeline/frames.rs', "        if let Some(every) = self.opts.watchdog {", "        if let Some(every) = self.opts.watchdog.filter(|_| self.building.is_none()) {")
# The packaged unit (kind `unit`: a check of tests/system/unit).
elif name.startswith("unit-"):
    u = 'systemd/lookd.service'
    drop = {"unit-no-credential": ["LoadCredential=mqtt-password:/etc/lookd/mqtt-password\n"],
            "unit-writable-system": ["ProtectSystem=strict\n"],
            "unit-devices-open": ["DevicePolicy=closed\n", "DeviceAllow=char-video4linux rw\n"],
            "unit-no-reload": ["ExecReload=/bin/kill -HUP $MAINPID\n"],
            "unit-no-watchdog": ["WatchdogSec=30\n"],
            "unit-restart-loop": ["RestartPreventExitStatus=78\n"],
            "unit-no-video-group": ["SupplementaryGroups=video\n"],  # and the membership postinst gives, below
            "unit-core-dumps": ["LimitCORE=0\n"]}
    if name == "unit-type-simple":
        sub(u, "Type=notify\n", "Type=simple\n")
    elif name in drop:
        for line in drop[name]:
            sub(u, line, "")
        if name == "unit-no-video-group":
            sub('cross/deb', "        usermod -a -G video lookd\n", "        true\n")
    else:
        raise SystemExit("unknown mutation " + name)
else:
    raise SystemExit("unknown mutation " + name)
