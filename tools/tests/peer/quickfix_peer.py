"""An independent FIX peer for the process tests: QuickFIX (the reference
C++ engine, through its Python binding) logs on to a ks-venue venue as an
initiator, with its FIX 4.4 data dictionary validating every message the
venue sends, and runs an order-entry script:

  1. a buy rests (ExecutionReport 150=0), its cancel is confirmed (150=4);
  2. a second buy rests, a sell crosses it (trades, 150=F, on both);
  3. a cancel of the filled buy is refused "too late" (35=9, 102=0);
  4. an order-status request (35=H) is answered (150=I);
  5. a third buy rests and a mass cancel (35=q) clears it (35=r, 150=4);
  6. a market-data request (35=V) gets a snapshot (35=W);
  7. Logout.

It prints one JSON object on stdout: what it received (MsgType and key
fields), every session-level Reject it sent (QuickFIX rejects a message
that breaks its dictionary), and whether each step got its answer.
Usage: quickfix_peer.py HOST PORT VENUE_COMPID WORKDIR
"""

import json
import os
import sys
import threading
import time

import quickfix as fix


def dictionary_path():
    for base in (sys.prefix, os.path.dirname(fix.__file__)):
        p = os.path.join(base, "share", "quickfix", "FIX44.xml")
        if os.path.exists(p):
            return p
    raise SystemExit("FIX44.xml not found next to the quickfix package")


class Peer(fix.Application):
    def __init__(self):
        super().__init__()
        self.lock = threading.Condition()
        self.received = []
        self.rejects_sent = []
        self.logged_on = False
        self.logged_out = False
        self.session = None

    def onCreate(self, sid):
        self.session = sid

    def onLogon(self, sid):
        with self.lock:
            self.logged_on = True
            self.lock.notify_all()

    def onLogout(self, sid):
        with self.lock:
            self.logged_out = True
            self.lock.notify_all()

    def toAdmin(self, msg, sid):
        t = msg.getHeader().getField(35)
        if t == "3":
            self.rejects_sent.append(msg.toString().replace("\x01", "|"))

    def fromAdmin(self, msg, sid):
        pass

    def toApp(self, msg, sid):
        pass

    def fromApp(self, msg, sid):
        def get(tag):
            return msg.getField(tag) if msg.isSetField(tag) else None

        entry = {"type": msg.getHeader().getField(35)}
        for tag in (11, 41, 150, 39, 102, 531, 533, 262, 14, 151, 32, 790):
            v = get(tag)
            if v is not None:
                entry[str(tag)] = v
        with self.lock:
            self.received.append(entry)
            self.lock.notify_all()

    def wait_for(self, pred, timeout=15.0):
        end = time.time() + timeout
        with self.lock:
            while not pred():
                left = end - time.time()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True

    def has(self, **want):
        return any(all(e.get(k) == v for k, v in want.items()) for e in self.received)


def message(msg_type, fields):
    m = fix.Message()
    m.getHeader().setField(fix.MsgType(msg_type))
    for tag, value in fields:
        m.setField(fix.StringField(tag, value))
    return m


def now():
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime())


def main():
    host, port, venue, workdir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    cfg = os.path.join(workdir, "quickfix.cfg")
    with open(cfg, "w") as f:
        f.write(
            "[DEFAULT]\nConnectionType=initiator\nReconnectInterval=1\n"
            "FileStorePath={w}/store\nFileLogPath={w}/log\nStartTime=00:00:00\nEndTime=00:00:00\n"
            "UseDataDictionary=Y\nDataDictionary={d}\nValidateUserDefinedFields=N\n"
            "ResetOnLogon=Y\nHeartBtInt=5\n\n"
            "[SESSION]\nBeginString=FIX.4.4\nSenderCompID=QFPEER\nTargetCompID={v}\n"
            "SocketConnectHost={h}\nSocketConnectPort={p}\n".format(
                w=workdir, d=dictionary_path(), v=venue, h=host, p=port
            )
        )
    app = Peer()
    settings = fix.SessionSettings(cfg)
    initiator = fix.SocketInitiator(
        app, fix.FileStoreFactory(settings), settings, fix.FileLogFactory(settings)
    )
    initiator.start()
    steps = {}
    try:
        steps["logon"] = app.wait_for(lambda: app.logged_on)
        send = lambda t, f: fix.Session.sendToTarget(message(t, f), app.session)
        order = lambda cl, side, px: [
            (11, cl), (1, "ACC1"), (55, "I0"), (54, side), (60, now()),
            (38, "5"), (40, "2"), (44, px), (59, "0"),
        ]
        if steps["logon"]:
            send("D", order("Q1", "1", "99.5"))
            steps["new"] = app.wait_for(lambda: app.has(type="8", **{"11": "Q1", "150": "0"}))
            send("F", [(41, "Q1"), (11, "Q1-C"), (55, "I0"), (54, "1"), (60, now()), (38, "5")])
            steps["cancel"] = app.wait_for(lambda: app.has(type="8", **{"41": "Q1", "150": "4"}))
            send("D", order("Q2", "1", "100"))
            send("D", order("Q3", "2", "100"))
            steps["trade"] = app.wait_for(
                lambda: app.has(type="8", **{"11": "Q2", "150": "F", "39": "2"})
                and app.has(type="8", **{"11": "Q3", "150": "F"})
            )
            send("F", [(41, "Q2"), (11, "Q2-C"), (55, "I0"), (54, "1"), (60, now()), (38, "5")])
            steps["too_late"] = app.wait_for(lambda: app.has(type="9", **{"41": "Q2", "102": "0"}))
            send("H", [(11, "Q2"), (55, "I0"), (54, "1"), (790, "S1")])
            steps["status"] = app.wait_for(lambda: app.has(type="8", **{"11": "Q2", "150": "I", "39": "2"}))
            send("D", order("Q4", "1", "98"))
            app.wait_for(lambda: app.has(type="8", **{"11": "Q4", "150": "0"}))
            send("q", [(11, "M1"), (530, "7"), (60, now())])
            steps["mass_cancel"] = app.wait_for(
                lambda: app.has(type="r", **{"11": "M1", "531": "7", "533": "1"})
                and app.has(type="8", **{"11": "Q4", "150": "4"})
            )
            send("D", order("Q5", "2", "101"))
            send("V", [(262, "MD1"), (263, "1"), (264, "1"), (267, "2"), (269, "0"), (269, "1"), (146, "1"), (55, "I0")])
            steps["market_data"] = app.wait_for(lambda: app.has(type="W", **{"262": "MD1"}))
        fix.Session.lookupSession(app.session).logout("done")
        steps["logout"] = app.wait_for(lambda: app.logged_out)
    finally:
        initiator.stop()
    print(json.dumps({"steps": steps, "received": app.received, "rejects_sent": app.rejects_sent}))


if __name__ == "__main__":
    main()
