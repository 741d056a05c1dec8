-- A gateway database written by the release at commit 40ae1f1 (PRAGMA user_version 1), dumped with
-- Python's sqlite3 iterdump: every table of that release, with rows in each: readings (breathing,
-- posture, air), an alert raised and resolved with its transitions, a nap session and its log, the
-- chained nap-check records of a 10-min nap (RecordKeeper), a staff assignment, the kit's device
-- bindings, a data request, and the retention job's rollups. Written by that release's Store,
-- RecordKeeper, AssignmentStore, ChildDataStore and retention job, in that order, on a new file.
-- tests/gateway/test_gateway_schema.py migrates it with today's code and reads it back.
PRAGMA user_version=1;
BEGIN TRANSACTION;
CREATE TABLE alert_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only audit order
    alert_id TEXT    NOT NULL,
    change   TEXT    NOT NULL,  -- raised | updated | resolved | acknowledged
    ts       INTEGER NOT NULL,
    body     TEXT    NOT NULL   -- the alert after the change
);
INSERT INTO "alert_transitions" VALUES(1,'prone-x','raised',1767239221234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"active","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239221234,"resolved_ts":null,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
INSERT INTO "alert_transitions" VALUES(2,'prone-x','resolved',1767239281234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"resolved","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239281234,"resolved_ts":1767239281234,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
CREATE TABLE alerts (
    id           TEXT    PRIMARY KEY,
    rule         TEXT    NOT NULL,
    severity     TEXT    NOT NULL,
    state        TEXT    NOT NULL,  -- active | resolved
    acknowledged INTEGER NOT NULL,  -- 0 | 1
    device       TEXT,
    room         TEXT,
    child        TEXT,
    started_ts   INTEGER NOT NULL,
    updated_ts   INTEGER NOT NULL,
    resolved_ts  INTEGER,
    body         TEXT    NOT NULL   -- the whole contract Alert as JSON
);
INSERT INTO "alerts" VALUES('prone-x','prone','critical','resolved',0,NULL,'hiyoko','c01',1767239221234,1767239281234,1767239281234,'{"id":"prone-x","rule":"prone","severity":"critical","state":"resolved","acknowledged":false,"acknowledged_by":null,"acknowledged_ts":null,"escalated":false,"device":null,"room":"hiyoko","child":"c01","started_ts":1767239221234,"updated_ts":1767239281234,"resolved_ts":1767239281234,"value":null,"message":"m","message_en":"m","notify_count":0,"notified_ts":null,"escalated_ts":null}');
CREATE TABLE data_requests (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,      -- unix ms
    action  TEXT    NOT NULL,      -- export | erase
    child   TEXT    NOT NULL,
    by      TEXT    NOT NULL,
    outcome TEXT    NOT NULL,      -- done | incomplete
    counts  TEXT    NOT NULL,      -- JSON object: what was exported or erased, per kind
    detail  TEXT    NOT NULL
);
INSERT INTO "data_requests" VALUES(1,1767241321234,'export','c05','admin','done','{"readings": 0}','to /tmp/x');
CREATE TABLE device_assignments (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    day    TEXT    NOT NULL,   -- local date the assignment holds for
    device TEXT    NOT NULL,
    child  TEXT,               -- null: the device watches nobody that day
    by     TEXT    NOT NULL,
    ts     INTEGER NOT NULL    -- unix ms, gateway clock
);
INSERT INTO "device_assignments" VALUES(1,'2026-01-01','nap_-c01','c02','staff',1767238981234);
CREATE TABLE device_bindings (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only (an erase blanks the child, keeps the row)
    device   TEXT    NOT NULL,
    child    TEXT,                 -- NULL: bound to nobody
    since_ts INTEGER NOT NULL      -- gateway clock, unix ms: from when the kit said so
);
INSERT INTO "device_bindings" VALUES(1,'nap_-c01','c01',1767238921234);
INSERT INTO "device_bindings" VALUES(2,'post-c01','c01',1767238921234);
INSERT INTO "device_bindings" VALUES(3,'ther-c01','c01',1767238921234);
INSERT INTO "device_bindings" VALUES(4,'nap_-c02','c02',1767238921234);
INSERT INTO "device_bindings" VALUES(5,'post-c02','c02',1767238921234);
INSERT INTO "device_bindings" VALUES(6,'nap_-c03','c03',1767238921234);
INSERT INTO "device_bindings" VALUES(7,'post-c03','c03',1767238921234);
INSERT INTO "device_bindings" VALUES(8,'nap_-c04','c04',1767238921234);
INSERT INTO "device_bindings" VALUES(9,'post-c04','c04',1767238921234);
INSERT INTO "device_bindings" VALUES(10,'nap_-c05','c05',1767238921234);
INSERT INTO "device_bindings" VALUES(11,'post-c05','c05',1767238921234);
INSERT INTO "device_bindings" VALUES(12,'nap_-c06','c06',1767238921234);
INSERT INTO "device_bindings" VALUES(13,'post-c06','c06',1767238921234);
INSERT INTO "device_bindings" VALUES(14,'nap_-c07','c07',1767238921234);
INSERT INTO "device_bindings" VALUES(15,'post-c07','c07',1767238921234);
INSERT INTO "device_bindings" VALUES(16,'nap_-c08','c08',1767238921234);
INSERT INTO "device_bindings" VALUES(17,'post-c08','c08',1767238921234);
INSERT INTO "device_bindings" VALUES(18,'nap_-c09','c09',1767238921234);
INSERT INTO "device_bindings" VALUES(19,'post-c09','c09',1767238921234);
INSERT INTO "device_bindings" VALUES(20,'nap_-c10','c10',1767238921234);
INSERT INTO "device_bindings" VALUES(21,'post-c10','c10',1767238921234);
INSERT INTO "device_bindings" VALUES(22,'nap_-c11','c11',1767238921234);
INSERT INTO "device_bindings" VALUES(23,'post-c11','c11',1767238921234);
INSERT INTO "device_bindings" VALUES(24,'post-c12','c12',1767238921234);
CREATE TABLE reading_rollups (
    stream TEXT    NOT NULL,
    field  TEXT    NOT NULL,
    device TEXT    NOT NULL,
    bucket INTEGER NOT NULL,  -- start of the 15-min bucket, unix ms, epoch-aligned
    count  INTEGER NOT NULL,
    sum    REAL    NOT NULL,  -- math.fsum of the values
    min    REAL    NOT NULL,
    max    REAL    NOT NULL,
    PRIMARY KEY (stream, field, device, bucket)
) WITHOUT ROWID;
INSERT INTO "reading_rollups" VALUES('air','co2_ppm','air-hiyoko',1767238200000,3,1803.0,600.0,602.0);
INSERT INTO "reading_rollups" VALUES('air','co2_ppm','air-hiyoko',1767239100000,15,9150.0,603.0,617.0);
INSERT INTO "reading_rollups" VALUES('air','co2_ppm','air-hiyoko',1767240000000,2,1237.0,618.0,619.0);
INSERT INTO "reading_rollups" VALUES('air','temp_c','air-hiyoko',1767238200000,3,67.5,22.5,22.5);
INSERT INTO "reading_rollups" VALUES('air','temp_c','air-hiyoko',1767239100000,15,337.5,22.5,22.5);
INSERT INTO "reading_rollups" VALUES('air','temp_c','air-hiyoko',1767240000000,2,45.0,22.5,22.5);
INSERT INTO "reading_rollups" VALUES('breathing','rate_bpm','nap_-c01',1767238200000,3,63.0,20.0,22.0);
INSERT INTO "reading_rollups" VALUES('breathing','rate_bpm','nap_-c01',1767239100000,15,330.0,20.0,24.0);
INSERT INTO "reading_rollups" VALUES('breathing','rate_bpm','nap_-c01',1767240000000,2,47.0,23.0,24.0);
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,   -- message time, unix ms
    seq         INTEGER NOT NULL,
    payload     TEXT    NOT NULL,   -- the validated reading as JSON
    received_ts INTEGER NOT NULL,   -- gateway clock, unix ms
    UNIQUE (device, stream, seq, ts)
);
INSERT INTO "readings" VALUES(1,'nap_-c01','breathing',1767238921234,0,'{"ts":1767238921234,"seq":0,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767238921274);
INSERT INTO "readings" VALUES(2,'post-c01','posture',1767238921234,0,'{"ts":1767238921234,"seq":0,"position":"supine","accel_mg":null}',1767238921274);
INSERT INTO "readings" VALUES(3,'air-hiyoko','air',1767238921234,0,'{"ts":1767238921234,"seq":0,"co2_ppm":600.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767238921274);
INSERT INTO "readings" VALUES(4,'nap_-c01','breathing',1767238981234,1,'{"ts":1767238981234,"seq":1,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767238981274);
INSERT INTO "readings" VALUES(5,'post-c01','posture',1767238981234,1,'{"ts":1767238981234,"seq":1,"position":"supine","accel_mg":null}',1767238981274);
INSERT INTO "readings" VALUES(6,'air-hiyoko','air',1767238981234,1,'{"ts":1767238981234,"seq":1,"co2_ppm":601.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767238981274);
INSERT INTO "readings" VALUES(7,'nap_-c01','breathing',1767239041234,2,'{"ts":1767239041234,"seq":2,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239041274);
INSERT INTO "readings" VALUES(8,'post-c01','posture',1767239041234,2,'{"ts":1767239041234,"seq":2,"position":"supine","accel_mg":null}',1767239041274);
INSERT INTO "readings" VALUES(9,'air-hiyoko','air',1767239041234,2,'{"ts":1767239041234,"seq":2,"co2_ppm":602.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239041274);
INSERT INTO "readings" VALUES(10,'nap_-c01','breathing',1767239101234,3,'{"ts":1767239101234,"seq":3,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239101274);
INSERT INTO "readings" VALUES(11,'post-c01','posture',1767239101234,3,'{"ts":1767239101234,"seq":3,"position":"supine","accel_mg":null}',1767239101274);
INSERT INTO "readings" VALUES(12,'air-hiyoko','air',1767239101234,3,'{"ts":1767239101234,"seq":3,"co2_ppm":603.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239101274);
INSERT INTO "readings" VALUES(13,'nap_-c01','breathing',1767239161234,4,'{"ts":1767239161234,"seq":4,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239161274);
INSERT INTO "readings" VALUES(14,'post-c01','posture',1767239161234,4,'{"ts":1767239161234,"seq":4,"position":"supine","accel_mg":null}',1767239161274);
INSERT INTO "readings" VALUES(15,'air-hiyoko','air',1767239161234,4,'{"ts":1767239161234,"seq":4,"co2_ppm":604.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239161274);
INSERT INTO "readings" VALUES(16,'nap_-c01','breathing',1767239221234,5,'{"ts":1767239221234,"seq":5,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239221274);
INSERT INTO "readings" VALUES(17,'post-c01','posture',1767239221234,5,'{"ts":1767239221234,"seq":5,"position":"supine","accel_mg":null}',1767239221274);
INSERT INTO "readings" VALUES(18,'air-hiyoko','air',1767239221234,5,'{"ts":1767239221234,"seq":5,"co2_ppm":605.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239221274);
INSERT INTO "readings" VALUES(19,'nap_-c01','breathing',1767239281234,6,'{"ts":1767239281234,"seq":6,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239281274);
INSERT INTO "readings" VALUES(20,'post-c01','posture',1767239281234,6,'{"ts":1767239281234,"seq":6,"position":"supine","accel_mg":null}',1767239281274);
INSERT INTO "readings" VALUES(21,'air-hiyoko','air',1767239281234,6,'{"ts":1767239281234,"seq":6,"co2_ppm":606.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239281274);
INSERT INTO "readings" VALUES(22,'nap_-c01','breathing',1767239341234,7,'{"ts":1767239341234,"seq":7,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239341274);
INSERT INTO "readings" VALUES(23,'post-c01','posture',1767239341234,7,'{"ts":1767239341234,"seq":7,"position":"supine","accel_mg":null}',1767239341274);
INSERT INTO "readings" VALUES(24,'air-hiyoko','air',1767239341234,7,'{"ts":1767239341234,"seq":7,"co2_ppm":607.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239341274);
INSERT INTO "readings" VALUES(25,'nap_-c01','breathing',1767239401234,8,'{"ts":1767239401234,"seq":8,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239401274);
INSERT INTO "readings" VALUES(26,'post-c01','posture',1767239401234,8,'{"ts":1767239401234,"seq":8,"position":"supine","accel_mg":null}',1767239401274);
INSERT INTO "readings" VALUES(27,'air-hiyoko','air',1767239401234,8,'{"ts":1767239401234,"seq":8,"co2_ppm":608.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239401274);
INSERT INTO "readings" VALUES(28,'nap_-c01','breathing',1767239461234,9,'{"ts":1767239461234,"seq":9,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239461274);
INSERT INTO "readings" VALUES(29,'post-c01','posture',1767239461234,9,'{"ts":1767239461234,"seq":9,"position":"supine","accel_mg":null}',1767239461274);
INSERT INTO "readings" VALUES(30,'air-hiyoko','air',1767239461234,9,'{"ts":1767239461234,"seq":9,"co2_ppm":609.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239461274);
INSERT INTO "readings" VALUES(31,'nap_-c01','breathing',1767239521234,10,'{"ts":1767239521234,"seq":10,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239521274);
INSERT INTO "readings" VALUES(32,'post-c01','posture',1767239521234,10,'{"ts":1767239521234,"seq":10,"position":"supine","accel_mg":null}',1767239521274);
INSERT INTO "readings" VALUES(33,'air-hiyoko','air',1767239521234,10,'{"ts":1767239521234,"seq":10,"co2_ppm":610.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239521274);
INSERT INTO "readings" VALUES(34,'nap_-c01','breathing',1767239581234,11,'{"ts":1767239581234,"seq":11,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239581274);
INSERT INTO "readings" VALUES(35,'post-c01','posture',1767239581234,11,'{"ts":1767239581234,"seq":11,"position":"supine","accel_mg":null}',1767239581274);
INSERT INTO "readings" VALUES(36,'air-hiyoko','air',1767239581234,11,'{"ts":1767239581234,"seq":11,"co2_ppm":611.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239581274);
INSERT INTO "readings" VALUES(37,'nap_-c01','breathing',1767239641234,12,'{"ts":1767239641234,"seq":12,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239641274);
INSERT INTO "readings" VALUES(38,'post-c01','posture',1767239641234,12,'{"ts":1767239641234,"seq":12,"position":"supine","accel_mg":null}',1767239641274);
INSERT INTO "readings" VALUES(39,'air-hiyoko','air',1767239641234,12,'{"ts":1767239641234,"seq":12,"co2_ppm":612.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239641274);
INSERT INTO "readings" VALUES(40,'nap_-c01','breathing',1767239701234,13,'{"ts":1767239701234,"seq":13,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239701274);
INSERT INTO "readings" VALUES(41,'post-c01','posture',1767239701234,13,'{"ts":1767239701234,"seq":13,"position":"supine","accel_mg":null}',1767239701274);
INSERT INTO "readings" VALUES(42,'air-hiyoko','air',1767239701234,13,'{"ts":1767239701234,"seq":13,"co2_ppm":613.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239701274);
INSERT INTO "readings" VALUES(43,'nap_-c01','breathing',1767239761234,14,'{"ts":1767239761234,"seq":14,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239761274);
INSERT INTO "readings" VALUES(44,'post-c01','posture',1767239761234,14,'{"ts":1767239761234,"seq":14,"position":"supine","accel_mg":null}',1767239761274);
INSERT INTO "readings" VALUES(45,'air-hiyoko','air',1767239761234,14,'{"ts":1767239761234,"seq":14,"co2_ppm":614.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239761274);
INSERT INTO "readings" VALUES(46,'nap_-c01','breathing',1767239821234,15,'{"ts":1767239821234,"seq":15,"rate_bpm":20.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239821274);
INSERT INTO "readings" VALUES(47,'post-c01','posture',1767239821234,15,'{"ts":1767239821234,"seq":15,"position":"supine","accel_mg":null}',1767239821274);
INSERT INTO "readings" VALUES(48,'air-hiyoko','air',1767239821234,15,'{"ts":1767239821234,"seq":15,"co2_ppm":615.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239821274);
INSERT INTO "readings" VALUES(49,'nap_-c01','breathing',1767239881234,16,'{"ts":1767239881234,"seq":16,"rate_bpm":21.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239881274);
INSERT INTO "readings" VALUES(50,'post-c01','posture',1767239881234,16,'{"ts":1767239881234,"seq":16,"position":"supine","accel_mg":null}',1767239881274);
INSERT INTO "readings" VALUES(51,'air-hiyoko','air',1767239881234,16,'{"ts":1767239881234,"seq":16,"co2_ppm":616.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239881274);
INSERT INTO "readings" VALUES(52,'nap_-c01','breathing',1767239941234,17,'{"ts":1767239941234,"seq":17,"rate_bpm":22.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767239941274);
INSERT INTO "readings" VALUES(53,'post-c01','posture',1767239941234,17,'{"ts":1767239941234,"seq":17,"position":"supine","accel_mg":null}',1767239941274);
INSERT INTO "readings" VALUES(54,'air-hiyoko','air',1767239941234,17,'{"ts":1767239941234,"seq":17,"co2_ppm":617.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767239941274);
INSERT INTO "readings" VALUES(55,'nap_-c01','breathing',1767240001234,18,'{"ts":1767240001234,"seq":18,"rate_bpm":23.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767240001274);
INSERT INTO "readings" VALUES(56,'post-c01','posture',1767240001234,18,'{"ts":1767240001234,"seq":18,"position":"supine","accel_mg":null}',1767240001274);
INSERT INTO "readings" VALUES(57,'air-hiyoko','air',1767240001234,18,'{"ts":1767240001234,"seq":18,"co2_ppm":618.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767240001274);
INSERT INTO "readings" VALUES(58,'nap_-c01','breathing',1767240061234,19,'{"ts":1767240061234,"seq":19,"rate_bpm":24.0,"amplitude":null,"motion":null,"present":true,"quality":null,"last_breath_ts":null}',1767240061274);
INSERT INTO "readings" VALUES(59,'post-c01','posture',1767240061234,19,'{"ts":1767240061234,"seq":19,"position":"supine","accel_mg":null}',1767240061274);
INSERT INTO "readings" VALUES(60,'air-hiyoko','air',1767240061234,19,'{"ts":1767240061234,"seq":19,"co2_ppm":619.0,"pm25_ugm3":null,"pm10_ugm3":null,"temp_c":22.5,"rh_pct":null}',1767240061274);
CREATE TABLE record_entries (
    seq       INTEGER PRIMARY KEY,  -- assigned by the chain (1, 2, …), not by SQLite
    kind      TEXT    NOT NULL,     -- session_started | session_stopped | record | confirmation | correction
    ts        INTEGER NOT NULL,     -- unix ms: the check time of a record, else when it happened
    room      TEXT    NOT NULL,
    child     TEXT,
    session   TEXT    NOT NULL,
    refers    INTEGER,              -- the entry a confirmation or correction is about
    body      TEXT    NOT NULL,     -- canonical JSON of the entry, with seq and prev_hash: what is hashed
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL      -- SHA-256 of body
);
INSERT INTO "record_entries" VALUES(1,'session_started',1767238921234,'hiyoko',NULL,'hiyoko-1767238921234',NULL,'{"by":"保育士A","children":[{"age_band":"0","child":"c01","interval_s":300},{"age_band":"0","child":"c02","interval_s":300},{"age_band":"0","child":"c03","interval_s":300},{"age_band":"0","child":"c04","interval_s":300},{"age_band":"1-2","child":"c05","interval_s":600},{"age_band":"1-2","child":"c06","interval_s":600},{"age_band":"1-2","child":"c07","interval_s":600},{"age_band":"1-2","child":"c08","interval_s":600},{"age_band":"3+","child":"c09","interval_s":900},{"age_band":"3+","child":"c10","interval_s":900},{"age_band":"3+","child":"c11","interval_s":900},{"age_band":"3+","child":"c12","interval_s":900}],"kind":"session_started","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","room":"hiyoko","seq":1,"session":"hiyoko-1767238921234","ts":1767238921234}','0000000000000000000000000000000000000000000000000000000000000000','ed1b2dae1414343f12b5a3e4df8225a8a6c2df3224caaf8d7ed856cba5e1467c');
INSERT INTO "record_entries" VALUES(2,'record',1767239221234,'hiyoko','c01','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":20.0,"breathing_rate_mean_bpm":20.0,"by":"auto","child":"c01","data_missing":false,"interval_s":300,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"ed1b2dae1414343f12b5a3e4df8225a8a6c2df3224caaf8d7ed856cba5e1467c","prone_seen":false,"room":"hiyoko","seq":2,"session":"hiyoko-1767238921234","ts":1767239221234}','ed1b2dae1414343f12b5a3e4df8225a8a6c2df3224caaf8d7ed856cba5e1467c','2edbc9990e1654a415bba680bfff9bd0d2ccd4fe036bcc3e5b551448830127cc');
INSERT INTO "record_entries" VALUES(3,'record',1767239221234,'hiyoko','c02','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":21.0,"breathing_rate_mean_bpm":21.0,"by":"auto","child":"c02","data_missing":false,"interval_s":300,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"2edbc9990e1654a415bba680bfff9bd0d2ccd4fe036bcc3e5b551448830127cc","prone_seen":false,"room":"hiyoko","seq":3,"session":"hiyoko-1767238921234","ts":1767239221234}','2edbc9990e1654a415bba680bfff9bd0d2ccd4fe036bcc3e5b551448830127cc','d905a0958c97377f5268c278fcebef9110cc50fef1b4a683cb97d0e9d8d5c58e');
INSERT INTO "record_entries" VALUES(4,'record',1767239221234,'hiyoko','c03','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":22.0,"breathing_rate_mean_bpm":22.0,"by":"auto","child":"c03","data_missing":false,"interval_s":300,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"d905a0958c97377f5268c278fcebef9110cc50fef1b4a683cb97d0e9d8d5c58e","prone_seen":false,"room":"hiyoko","seq":4,"session":"hiyoko-1767238921234","ts":1767239221234}','d905a0958c97377f5268c278fcebef9110cc50fef1b4a683cb97d0e9d8d5c58e','70d9bc0f131bee1b790a9c233977790c1cb063ecffff7d20756cd97e2fe05f2d');
INSERT INTO "record_entries" VALUES(5,'record',1767239221234,'hiyoko','c04','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":23.0,"breathing_rate_mean_bpm":23.0,"by":"auto","child":"c04","data_missing":false,"interval_s":300,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"70d9bc0f131bee1b790a9c233977790c1cb063ecffff7d20756cd97e2fe05f2d","prone_seen":false,"room":"hiyoko","seq":5,"session":"hiyoko-1767238921234","ts":1767239221234}','70d9bc0f131bee1b790a9c233977790c1cb063ecffff7d20756cd97e2fe05f2d','d8f307c5ee2bdd7f544c47aadd44f54c38a921ce750f268b6874b7677bcbdeb7');
INSERT INTO "record_entries" VALUES(6,'record',1767239521234,'hiyoko','c01','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":36.6,"body_temp_ts":1767239221234,"breathing_ok":true,"breathing_rate_bpm":20.0,"breathing_rate_mean_bpm":20.0,"by":"auto","child":"c01","data_missing":false,"interval_s":300,"interval_start_ts":1767239221234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"d8f307c5ee2bdd7f544c47aadd44f54c38a921ce750f268b6874b7677bcbdeb7","prone_seen":false,"room":"hiyoko","seq":6,"session":"hiyoko-1767238921234","ts":1767239521234}','d8f307c5ee2bdd7f544c47aadd44f54c38a921ce750f268b6874b7677bcbdeb7','777aa4262fd3b34bd3bdd6085653b724accf3d0684c3bfb946db2810d3acdd40');
INSERT INTO "record_entries" VALUES(7,'record',1767239521234,'hiyoko','c02','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":21.0,"breathing_rate_mean_bpm":21.0,"by":"auto","child":"c02","data_missing":false,"interval_s":300,"interval_start_ts":1767239221234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"777aa4262fd3b34bd3bdd6085653b724accf3d0684c3bfb946db2810d3acdd40","prone_seen":false,"room":"hiyoko","seq":7,"session":"hiyoko-1767238921234","ts":1767239521234}','777aa4262fd3b34bd3bdd6085653b724accf3d0684c3bfb946db2810d3acdd40','0aeb35da42604b3d3db60809260ba8d14f3900b882b5329a2d8b8fc67ffe93fa');
INSERT INTO "record_entries" VALUES(8,'record',1767239521234,'hiyoko','c03','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":22.0,"breathing_rate_mean_bpm":22.0,"by":"auto","child":"c03","data_missing":false,"interval_s":300,"interval_start_ts":1767239221234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"0aeb35da42604b3d3db60809260ba8d14f3900b882b5329a2d8b8fc67ffe93fa","prone_seen":false,"room":"hiyoko","seq":8,"session":"hiyoko-1767238921234","ts":1767239521234}','0aeb35da42604b3d3db60809260ba8d14f3900b882b5329a2d8b8fc67ffe93fa','cfe9b61104fa54563d704781ad78071d5c6a3426097f891b620b3a6ebe4bd373');
INSERT INTO "record_entries" VALUES(9,'record',1767239521234,'hiyoko','c04','hiyoko-1767238921234',NULL,'{"age_band":"0","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":23.0,"breathing_rate_mean_bpm":23.0,"by":"auto","child":"c04","data_missing":false,"interval_s":300,"interval_start_ts":1767239221234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"cfe9b61104fa54563d704781ad78071d5c6a3426097f891b620b3a6ebe4bd373","prone_seen":false,"room":"hiyoko","seq":9,"session":"hiyoko-1767238921234","ts":1767239521234}','cfe9b61104fa54563d704781ad78071d5c6a3426097f891b620b3a6ebe4bd373','0395625dbdbe816b38121c8be7ad55a345e3ddcf33f558179392816a836c069c');
INSERT INTO "record_entries" VALUES(10,'record',1767239521234,'hiyoko','c05','hiyoko-1767238921234',NULL,'{"age_band":"1-2","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":24.0,"breathing_rate_mean_bpm":24.0,"by":"auto","child":"c05","data_missing":false,"interval_s":600,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"0395625dbdbe816b38121c8be7ad55a345e3ddcf33f558179392816a836c069c","prone_seen":false,"room":"hiyoko","seq":10,"session":"hiyoko-1767238921234","ts":1767239521234}','0395625dbdbe816b38121c8be7ad55a345e3ddcf33f558179392816a836c069c','5025f97fa3f6332c9041fe3bb262d2caa51a0bddbdb46f9f09e3af3f8447320b');
INSERT INTO "record_entries" VALUES(11,'record',1767239521234,'hiyoko','c06','hiyoko-1767238921234',NULL,'{"age_band":"1-2","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":25.0,"breathing_rate_mean_bpm":25.0,"by":"auto","child":"c06","data_missing":false,"interval_s":600,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"5025f97fa3f6332c9041fe3bb262d2caa51a0bddbdb46f9f09e3af3f8447320b","prone_seen":false,"room":"hiyoko","seq":11,"session":"hiyoko-1767238921234","ts":1767239521234}','5025f97fa3f6332c9041fe3bb262d2caa51a0bddbdb46f9f09e3af3f8447320b','88b2354e681039c335e2263ef4c1d126cd4a60c267b8d828f76cf1d9155ebcfb');
INSERT INTO "record_entries" VALUES(12,'record',1767239521234,'hiyoko','c07','hiyoko-1767238921234',NULL,'{"age_band":"1-2","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":26.0,"breathing_rate_mean_bpm":26.0,"by":"auto","child":"c07","data_missing":false,"interval_s":600,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"88b2354e681039c335e2263ef4c1d126cd4a60c267b8d828f76cf1d9155ebcfb","prone_seen":false,"room":"hiyoko","seq":12,"session":"hiyoko-1767238921234","ts":1767239521234}','88b2354e681039c335e2263ef4c1d126cd4a60c267b8d828f76cf1d9155ebcfb','ea658f3b130b6e42bf31d1977ca95353dae7167cf9fb269137d87ce2d03c107d');
INSERT INTO "record_entries" VALUES(13,'record',1767239521234,'hiyoko','c08','hiyoko-1767238921234',NULL,'{"age_band":"1-2","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":27.0,"breathing_rate_mean_bpm":27.0,"by":"auto","child":"c08","data_missing":false,"interval_s":600,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":false,"posture":"supine","prev_hash":"ea658f3b130b6e42bf31d1977ca95353dae7167cf9fb269137d87ce2d03c107d","prone_seen":false,"room":"hiyoko","seq":13,"session":"hiyoko-1767238921234","ts":1767239521234}','ea658f3b130b6e42bf31d1977ca95353dae7167cf9fb269137d87ce2d03c107d','3aaa48342fe72eb101e818ef0621238cf19cbc3bd5424ee10e65535800dcbb27');
INSERT INTO "record_entries" VALUES(14,'record',1767239521234,'hiyoko','c09','hiyoko-1767238921234',NULL,'{"age_band":"3+","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":28.0,"breathing_rate_mean_bpm":28.0,"by":"auto","child":"c09","data_missing":false,"interval_s":900,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":true,"posture":"supine","prev_hash":"3aaa48342fe72eb101e818ef0621238cf19cbc3bd5424ee10e65535800dcbb27","prone_seen":false,"room":"hiyoko","seq":14,"session":"hiyoko-1767238921234","ts":1767239521234}','3aaa48342fe72eb101e818ef0621238cf19cbc3bd5424ee10e65535800dcbb27','8a0e63ccf435bf8c553ddf22f968e92ed1f4965f389fab922cde768a49d4660f');
INSERT INTO "record_entries" VALUES(15,'record',1767239521234,'hiyoko','c10','hiyoko-1767238921234',NULL,'{"age_band":"3+","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":29.0,"breathing_rate_mean_bpm":29.0,"by":"auto","child":"c10","data_missing":false,"interval_s":900,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":true,"posture":"supine","prev_hash":"8a0e63ccf435bf8c553ddf22f968e92ed1f4965f389fab922cde768a49d4660f","prone_seen":false,"room":"hiyoko","seq":15,"session":"hiyoko-1767238921234","ts":1767239521234}','8a0e63ccf435bf8c553ddf22f968e92ed1f4965f389fab922cde768a49d4660f','bd145d434dd01c64dd03057a63ecfc80971cdb979dd3470f9234bc54f5f1bd27');
INSERT INTO "record_entries" VALUES(16,'record',1767239521234,'hiyoko','c11','hiyoko-1767238921234',NULL,'{"age_band":"3+","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":true,"breathing_rate_bpm":30.0,"breathing_rate_mean_bpm":30.0,"by":"auto","child":"c11","data_missing":false,"interval_s":900,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":true,"partial":true,"posture":"supine","prev_hash":"bd145d434dd01c64dd03057a63ecfc80971cdb979dd3470f9234bc54f5f1bd27","prone_seen":false,"room":"hiyoko","seq":16,"session":"hiyoko-1767238921234","ts":1767239521234}','bd145d434dd01c64dd03057a63ecfc80971cdb979dd3470f9234bc54f5f1bd27','537232cf7c82807527cd93652aaf17cb9a4f8425c008c8bb5093db31a56dd504');
INSERT INTO "record_entries" VALUES(17,'record',1767239521234,'hiyoko','c12','hiyoko-1767238921234',NULL,'{"age_band":"3+","alerts":[],"body_temp_c":null,"body_temp_ts":null,"breathing_ok":null,"breathing_rate_bpm":null,"breathing_rate_mean_bpm":null,"by":"auto","child":"c12","data_missing":false,"interval_s":900,"interval_start_ts":1767238921234,"kind":"record","missing":[],"on_mat":null,"partial":true,"posture":"supine","prev_hash":"537232cf7c82807527cd93652aaf17cb9a4f8425c008c8bb5093db31a56dd504","prone_seen":false,"room":"hiyoko","seq":17,"session":"hiyoko-1767238921234","ts":1767239521234}','537232cf7c82807527cd93652aaf17cb9a4f8425c008c8bb5093db31a56dd504','252e1f3fb6212aa8a54b9cb360eb15bc48966b7869dfb6d8b87bc2fb24fcbb43');
INSERT INTO "record_entries" VALUES(18,'session_stopped',1767239521234,'hiyoko',NULL,'hiyoko-1767238921234',NULL,'{"by":"保育士A","kind":"session_stopped","prev_hash":"252e1f3fb6212aa8a54b9cb360eb15bc48966b7869dfb6d8b87bc2fb24fcbb43","room":"hiyoko","seq":18,"session":"hiyoko-1767238921234","ts":1767239521234}','252e1f3fb6212aa8a54b9cb360eb15bc48966b7869dfb6d8b87bc2fb24fcbb43','5b926951f1b5a8b06fabf0ea8d8aa9ff1b794b646f57535126d2ebc7c7ecba83');
CREATE TABLE retention_state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO "retention_state" VALUES('rolled_id',60);
INSERT INTO "retention_state" VALUES('rolled_until',1767241800000);
CREATE TABLE session_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- append-only
    room       TEXT    NOT NULL,
    change     TEXT    NOT NULL,  -- started | stopped
    ts         INTEGER NOT NULL,  -- gateway clock, unix ms
    session_id TEXT    NOT NULL,
    body       TEXT    NOT NULL   -- the SessionState after the change
);
INSERT INTO "session_log" VALUES(1,'hiyoko','started',1767238921234,'s-1','{"room":"hiyoko","active":true,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":null,"stopped_by":null,"updated_ts":1767238921234}');
INSERT INTO "session_log" VALUES(2,'hiyoko','stopped',1767240721234,'s-1','{"room":"hiyoko","active":false,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":1767240721234,"stopped_by":"staff","updated_ts":1767240721234}');
CREATE TABLE sessions (
    room            TEXT PRIMARY KEY,
    body            TEXT,           -- the room's latest SessionState as JSON (NULL: never had one)
    schedule_window TEXT            -- the nap_schedule window the gateway last acted on
);
INSERT INTO "sessions" VALUES('hiyoko','{"room":"hiyoko","active":false,"session_id":"s-1","source":null,"started_ts":1767238921234,"started_by":"staff","scheduled_end_ts":null,"stopped_ts":1767240721234,"stopped_by":"staff","updated_ts":1767240721234}','2026-01-01T12:30');
CREATE INDEX readings_by_stream ON readings (stream, device, ts);
CREATE INDEX alerts_open ON alerts (state, acknowledged);
CREATE INDEX alerts_by_start ON alerts (started_ts);
CREATE INDEX alert_transitions_by_alert ON alert_transitions (alert_id, seq);
CREATE INDEX session_log_by_room ON session_log (room, ts);
CREATE INDEX record_entries_by_room ON record_entries (room, kind, ts);
CREATE INDEX record_entries_by_refers ON record_entries (refers);
CREATE TRIGGER record_entries_no_update BEFORE UPDATE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: UPDATE refused'); END;
CREATE TRIGGER record_entries_no_delete BEFORE DELETE ON record_entries
BEGIN SELECT RAISE(ABORT, 'nap-check records are append-only: DELETE refused'); END;
CREATE INDEX device_assignments_by_day ON device_assignments (day, device, seq);
CREATE INDEX device_bindings_by_child ON device_bindings (child);
CREATE TRIGGER data_requests_no_update BEFORE UPDATE ON data_requests
BEGIN SELECT RAISE(ABORT, 'the data request log is append-only: UPDATE refused'); END;
CREATE TRIGGER data_requests_no_delete BEFORE DELETE ON data_requests
BEGIN SELECT RAISE(ABORT, 'the data request log is append-only: DELETE refused'); END;
CREATE INDEX reading_rollups_by_bucket ON reading_rollups (bucket);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alert_transitions',2);
INSERT INTO "sqlite_sequence" VALUES('session_log',2);
INSERT INTO "sqlite_sequence" VALUES('device_assignments',1);
INSERT INTO "sqlite_sequence" VALUES('device_bindings',24);
INSERT INTO "sqlite_sequence" VALUES('data_requests',1);
COMMIT;
