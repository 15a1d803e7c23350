"""Evaluation-only text: vocabulary, templates and seeds the calibration corpus never uses.

The quantizers calibrate on :mod:`builder.data.corpus`; the gate judges on what this module
generates, so a configuration that merely fits the calibration mix is not rewarded. Two
structurally different splits, each item tagged with its slice so the worst slice is visible:

- ``search``: shopper queries (1–2 token, typo-heavy, all-caps, non-Latin and mixed-script,
  other Latin languages, model codes and units, emoji, natural-language) against a catalog of
  titles, near-duplicate variant families, long prose past the max length, spec sheets, HTML
  remnants, non-Latin and shouty titles. Each query knows the product it was written for.
- ``near-duplicates``: title→title and description→title retrieval inside families of variants
  that differ only in colour, size or pack count, where retrieval order is most fragile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache

SEED = 7_310_044  # never used for calibration

# category -> nouns, brands, attributes, sizes/specs, colours; none shared with corpus.CATALOG
VOCAB: dict[str, dict[str, list[str]]] = {
    "cameras": {
        "nouns": ["mirrorless camera", "action cam", "camera lens", "tripod", "instant camera"],
        "brands": ["Fujifilm", "Canon", "Nikon", "GoPro", "Panasonic Lumix", "Sigma", "Manfrotto"],
        "attrs": [
            "4K60 video",
            "in-body stabilisation",
            "weather sealed",
            "24.2MP APS-C",
            "f/1.8 prime",
            "dual card slots",
            "eye autofocus",
        ],
        "sizes": ["24-70mm", "50mm", "18-55mm kit", "160cm max height", "1/2.3-inch sensor"],
        "colors": ["charcoal", "silver", "olive"],
    },
    "garden": {
        "nouns": ["garden hose", "lawn mower", "raised bed", "pruning shears", "patio heater"],
        "brands": ["Gardena", "Husqvarna", "Fiskars", "Bosch Green", "Stihl", "Vegtrug"],
        "attrs": [
            "cordless 36V",
            "self-propelled",
            "kink-free",
            "rust-proof blades",
            "mulching function",
            "FSC certified wood",
        ],
        "sizes": ["15m", "30 m", "46cm cut", "120 x 60 cm", "13kW"],
        "colors": ["forest green", "terracotta", "anthracite"],
    },
    "cycling": {
        "nouns": ["road bike", "bike helmet", "bike lock", "cycling jersey", "e-bike battery"],
        "brands": ["Shimano", "Giant", "Trek", "Abus", "Giro", "Specialized", "Bosch eBike"],
        "attrs": [
            "carbon fork",
            "hydraulic disc brakes",
            "MIPS protection",
            "Di2 shifting",
            "500Wh",
            "tubeless ready",
            "reflective trim",
        ],
        "sizes": ["frame 54cm", "700x28c", "29er", "size M", "12-speed"],
        "colors": ["gloss red", "matte black", "team blue"],
    },
    "watches": {
        "nouns": ["smartwatch", "dive watch", "fitness tracker", "chronograph", "watch strap"],
        "brands": ["Garmin", "Casio G-Shock", "Seiko", "Fitbit", "Citizen Eco-Drive", "Amazfit"],
        "attrs": [
            "sapphire crystal",
            "200m water resistant",
            "GPS + GLONASS",
            "heart rate",
            "solar charging",
            "automatic movement",
        ],
        "sizes": ["42mm", "46 mm case", "20mm lug", "22mm"],
        "colors": ["rose gold", "gunmetal", "steel"],
    },
    "bedding": {
        "nouns": [
            "duvet cover",
            "memory foam pillow",
            "weighted blanket",
            "fitted sheet",
            "mattress topper",
        ],
        "brands": ["Brooklinen", "Tempur", "Silentnight", "Emma", "Parachute", "Dreams"],
        "attrs": [
            "400 thread count",
            "Egyptian cotton",
            "cooling gel",
            "hypoallergenic",
            "OEKO-TEX",
            "deep pocket",
        ],
        "sizes": ["king size", "double", "200x200cm", "queen", "7kg"],
        "colors": ["sage", "oatmeal", "dusty pink"],
    },
    "baby": {
        "nouns": ["baby stroller", "car seat", "baby monitor", "high chair", "diaper bag"],
        "brands": ["Maxi-Cosi", "Cybex", "Bugaboo", "Joie", "Philips Avent", "Stokke"],
        "attrs": [
            "ISOFIX",
            "i-Size R129",
            "one-hand fold",
            "night vision",
            "BPA free",
            "reversible seat",
        ],
        "sizes": ["0-13kg", "group 0+", "6-36 months", "40-105cm"],
        "colors": ["moon black", "soho grey", "beige"],
    },
    "automotive": {
        "nouns": ["dash cam", "car battery", "tyre inflator", "jump starter", "roof box"],
        "brands": ["Thule", "Michelin", "Bosch", "Nextbase", "NOCO", "Osram"],
        "attrs": ["1440p", "GPS logging", "12V 70Ah", "digital gauge", "2000A peak", "quick-mount"],
        "sizes": ["420L", "205/55 R16", "3.5 inch screen", "150 PSI"],
        "colors": ["titan black", "silver"],
    },
    "office": {
        "nouns": ["fountain pen", "label printer", "paper shredder", "monitor arm", "notebook"],
        "brands": ["Lamy", "Brother", "Fellowes", "Leuchtturm1917", "Moleskine", "Ergotron"],
        "attrs": [
            "cross-cut P-4",
            "dotted pages",
            "gas spring",
            "Bluetooth",
            "fine nib",
            "acid-free paper",
        ],
        "sizes": ["A5", "A4", "12mm tape", "up to 32 inch", "249 pages"],
        "colors": ["emerald", "petrol", "white"],
    },
    "luggage": {
        "nouns": ["carry-on suitcase", "travel backpack", "duffel bag", "packing cubes"],
        "brands": ["Samsonite", "Osprey", "Rimowa", "Eastpak", "Delsey", "Away"],
        "attrs": [
            "TSA lock",
            "spinner wheels",
            "polycarbonate shell",
            "laptop sleeve",
            "expandable",
            "water-repellent",
        ],
        "sizes": ["55x40x20cm", "40L", "cabin size", "68 cm", "3-piece set"],
        "colors": ["midnight", "mint", "graphite"],
    },
    "gaming": {
        "nouns": [
            "game controller",
            "gaming mouse",
            "mechanical keyboard",
            "capture card",
            "VR headset",
        ],
        "brands": ["Logitech G", "Razer", "SteelSeries", "Elgato", "8BitDo", "Meta Quest"],
        "attrs": [
            "hall effect sticks",
            "26K DPI",
            "hot-swappable switches",
            "RGB",
            "1000Hz polling",
            "4K60 HDR passthrough",
        ],
        "sizes": ["TKL", "60%", "full size", "128GB"],
        "colors": ["white mercury", "black", "lilac"],
    },
    "camping": {
        "nouns": ["camping tent", "sleeping bag", "camping stove", "headlamp", "water filter"],
        "brands": ["MSR", "Vaude", "Coleman", "Black Diamond", "Sawyer", "Nordisk"],
        "attrs": [
            "3-season",
            "-10°C comfort",
            "ultralight",
            "USB rechargeable",
            "350 lumens",
            "double wall",
        ],
        "sizes": ["2-person", "4 person", "1.2kg", "220cm", "0.1 micron"],
        "colors": ["sand", "orange", "moss"],
    },
    "lighting": {
        "nouns": ["LED bulb", "desk lamp", "string lights", "ceiling light", "floor lamp"],
        "brands": ["Philips Hue", "IKEA Tradfri", "Nanoleaf", "Govee", "Artemide", "LIFX"],
        "attrs": ["dimmable", "2700K warm white", "Zigbee", "E27", "CRI 95", "motion sensor"],
        "sizes": ["9W", "806lm", "10m", "60cm", "GU10"],
        "colors": ["brass", "opal white", "black"],
    },
}

# non-Latin and mixed-script names per category: zh, ja, ko, ru, ar, el, th, hi
NON_LATIN: dict[str, list[str]] = {
    "cameras": [
        "无反相机",
        "ミラーレス一眼",
        "미러리스 카메라",
        "беззеркальная камера",
        "كاميرا رقمية",
        "φωτογραφική μηχανή",
        "กล้องถ่ายรูป",
        "कैमरा लेंस",
    ],
    "garden": [
        "花园水管",
        "芝刈り機",
        "정원 호스",
        "садовый шланг",
        "خرطوم حديقة",
        "λάστιχο κήπου",
        "สายยางรดน้ำ",
        "बगीचे की नली",
    ],
    "cycling": [
        "公路自行车",
        "自転車 ヘルメット",
        "자전거 헬멧",
        "велосипедный замок",
        "دراجة هوائية",
        "ποδήλατο δρόμου",
        "หมวกจักรยาน",
        "साइकिल हेलमेट",
    ],
    "watches": [
        "智能手表",
        "ダイバーズウォッチ",
        "스마트워치",
        "умные часы",
        "ساعة ذكية",
        "ρολόι χειρός",
        "นาฬิกาอัจฉริยะ",
        "स्मार्ट घड़ी",
    ],
    "bedding": [
        "羽绒被套",
        "低反発枕",
        "차렵이불",
        "пододеяльник",
        "غطاء لحاف",
        "μαξιλάρι ύπνου",
        "ผ้าปูที่นอน",
        "तकिया",
    ],
    "baby": [
        "婴儿推车",
        "チャイルドシート",
        "유모차",
        "детская коляска",
        "عربة أطفال",
        "καρότσι μωρού",
        "รถเข็นเด็ก",
        "बेबी स्ट्रॉलर",
    ],
    "automotive": [
        "行车记录仪",
        "ドライブレコーダー",
        "블랙박스",
        "видеорегистратор",
        "كاميرا سيارة",
        "κάμερα αυτοκινήτου",
        "กล้องติดรถยนต์",
        "डैश कैम",
    ],
    "office": [
        "钢笔",
        "万年筆",
        "만년필",
        "перьевая ручка",
        "قلم حبر",
        "πένα",
        "ปากกาหมึกซึม",
        "फाउंटेन पेन",
    ],
    "luggage": [
        "登机箱",
        "スーツケース",
        "캐리어",
        "чемодан",
        "حقيبة سفر",
        "βαλίτσα",
        "กระเป๋าเดินทาง",
        "सूटकेस",
    ],
    "gaming": [
        "游戏手柄",
        "ゲーミングマウス",
        "기계식 키보드",
        "игровая мышь",
        "يد تحكم",
        "χειριστήριο",
        "คีย์บอร์ดเกมมิ่ง",
        "गेमिंग माउस",
    ],
    "camping": ["帐篷", "寝袋", "캠핑 텐트", "палатка", "خيمة", "σκηνή", "เต็นท์", "टेंट"],
    "lighting": [
        "台灯",
        "LED電球",
        "스탠드 조명",
        "настольная лампа",
        "مصباح مكتب",
        "φωτιστικό",
        "โคมไฟ",
        "टेबल लैंप",
    ],
}

# other Latin-script languages (the calibration corpus has de/es/fr)
LATIN: dict[str, list[str]] = {
    "cameras": ["fotocamera mirrorless", "câmera digital", "camera statief", "aparat cyfrowy"],
    "garden": ["tubo da giardino", "cortador de relva", "tuinslang", "kosiarka spalinowa"],
    "cycling": ["bici da corsa", "capacete ciclismo", "fietsslot", "kask rowerowy"],
    "watches": ["orologio subacqueo", "relógio inteligente", "sporthorloge", "zegarek męski"],
    "bedding": [
        "copripiumino matrimoniale",
        "travesseiro viscoelástico",
        "dekbedovertrek",
        "kołdra puchowa",
    ],
    "baby": ["passeggino leggero", "cadeira auto bebé", "kinderwagen", "fotelik samochodowy"],
    "automotive": ["telecamera auto", "bateria carro", "dashcam auto", "prostownik do akumulatora"],
    "office": ["penna stilografica", "caderno pontilhado", "papierversnipperaar", "długopis"],
    "luggage": ["valigia cabina", "mochila de viagem", "handbagage koffer", "walizka kabinowa"],
    "gaming": ["controller wireless", "teclado mecânico", "gamemuis", "mysz dla graczy"],
    "camping": ["tenda campeggio", "saco de dormir", "kampeerlamp", "namiot turystyczny"],
    "lighting": ["lampada da tavolo", "lâmpada led", "vloerlamp", "lampa sufitowa"],
}

EMOJI = ["🔥", "✨", "💯", "⭐", "🎁", "👍", "🛒", "⚡", "❤️", "✅", "🚚", "😍"]
FILLER = ["with", "and", "for", "best", "cheap", "new", "original", "genuine", "pro"]

PROSE = [
    "Whether you are a beginner or a seasoned pro, this {noun} by {brand} adapts to how you work.",
    "We redesigned the {noun} from the ground up: {attr} now comes standard, and {attr2} is "
    "available as an optional upgrade.",
    "Reviewers in {year} called it the most dependable {noun} in its class, citing {attr}.",
    "In the box: one {noun} ({size}), a braided cable, two spare parts and a printed manual in "
    "twelve languages.",
    "Heads up: stock of the {color} finish is limited and ships separately from other orders.",
    "The {brand} {code} replaces the {code2}, keeping the same mounting points and accessories.",
    "Independent lab tests measured {pct} percent better efficiency than the class average.",
    "Shipping is carbon neutral; the outer carton is made from 80% recycled fibre.",
    "Questions? Our product specialists reply by chat seven days a week, usually in minutes.",
    "Warranty terms: {years} years on parts, {months} months on wear items, register online.",
    "Customers who bought this {noun} also looked at other {category} essentials.",
    "Note that photos show the {color} edition; accessories pictured are not included.",
]

HTML_BITS = [
    "<br>",
    "<br/>",
    "&amp;",
    "&nbsp;",
    "<li>",
    "</li>",
    "<b>",
    "</b>",
    "&quot;",
    "<p>",
    "</p>",
    "&#8482;",
    "<ul>",
    "</ul>",
    "&lt;new&gt;",
]


@dataclass(frozen=True)
class Text:
    text: str
    slice: str


@dataclass
class Retrieval:
    """Queries against a corpus; ``relevant[i]`` are corpus indices written for query i."""

    name: str
    queries: list[Text] = field(default_factory=list)
    corpus: list[Text] = field(default_factory=list)
    relevant: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class _Product:
    category: str
    brand: str
    noun: str
    code: str
    attrs: tuple[str, ...]
    size: str
    color: str
    family: int


def _code(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{rng.choice('ABCDEFGHKLMNPRSTX')}{rng.randint(100, 999)}"
    if style == 1:
        return f"{rng.choice(['XR', 'MK', 'GT', 'ZV', 'HX'])}{rng.randint(2, 9)}"
    if style == 2:
        return f"{rng.randint(10, 99)}{rng.choice('ABCDEF')}-{rng.randint(1000, 9999)}"
    return f"Gen {rng.randint(2, 7)}"


def _heavy_typos(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(max(2, len(words) // 2)):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) < 3:
            continue
        j = rng.randrange(1, len(w))
        op = rng.randrange(4)
        if op == 0:
            w = w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :]
        elif op == 1:
            w = w[:j] + w[j + 1 :]
        elif op == 2:
            w = w[:j] + rng.choice("aeioustnrl") + w[j:]
        else:
            w = w[:j] + rng.choice("qwertyuiopasdfghjklzxcvbnm") + w[j + 1 :]
        words[i] = w
    return " ".join(words)


def _products(rng: random.Random, n_families: int) -> list[_Product]:
    """Families of 2–5 variants that differ only in colour, size or pack count."""
    cats = sorted(VOCAB)
    out: list[_Product] = []
    for fam in range(n_families):
        cat = cats[fam % len(cats)]
        v = VOCAB[cat]
        brand, noun, code = rng.choice(v["brands"]), rng.choice(v["nouns"]), _code(rng)
        attrs = tuple(rng.sample(v["attrs"], k=rng.randint(1, 3)))
        for _ in range(rng.randint(2, 5)):
            out.append(
                _Product(
                    cat,
                    brand,
                    noun,
                    code,
                    attrs,
                    rng.choice(v["sizes"]),
                    rng.choice(v["colors"]),
                    fam,
                )
            )
    return out


def _title(rng: random.Random, p: _Product) -> Text:
    style = rng.random()
    if style < 0.08:
        words = f"{p.brand} {p.noun} {p.code} {' '.join(p.attrs)}".upper()
        return Text(f"{rng.choice(EMOJI)} {words} {rng.choice(EMOJI)} HOT DEAL", "title-shouty")
    if style < 0.16:
        local = rng.choice(NON_LATIN[p.category])
        return Text(f"{p.brand} {local} {p.code} {p.size} ({p.color})", "title-non-latin")
    if style < 0.5:
        return Text(
            f"{p.brand} {p.noun.title()} {p.code} [{', '.join(p.attrs)}] – {p.color}, {p.size}",
            "title",
        )
    return Text(f"{p.noun} | {p.brand} {p.code} | {p.size} | {p.color} | {p.attrs[0]}", "title")


def _prose(rng: random.Random, p: _Product, words: int) -> str:
    out: list[str] = []
    pool = PROSE[:]
    rng.shuffle(pool)
    i = 0
    while len(" ".join(out).split()) < words:
        out.append(
            pool[i % len(pool)].format(
                noun=p.noun,
                brand=p.brand,
                attr=rng.choice(VOCAB[p.category]["attrs"]),
                attr2=rng.choice(VOCAB[p.category]["attrs"]),
                size=p.size,
                color=p.color,
                code=p.code,
                code2=_code(rng),
                pct=rng.randint(8, 35),
                year=rng.randint(2019, 2026),
                years=rng.randint(2, 10),
                months=rng.choice([6, 12, 18]),
                category=p.category,
            )
        )
        i += 1
    return " ".join(out)


def _long_text(rng: random.Random, p: _Product) -> Text:
    kind = rng.random()
    if kind < 0.45:  # prose past the 256-token limit
        return Text(_prose(rng, p, rng.randint(220, 320)), "long-description")
    if kind < 0.75:  # key: value spec sheet, number-dense
        rows = [f"Model: {p.brand} {p.code}", f"Size: {p.size}", f"Colour: {p.color}"]
        while len(rows) < rng.randint(25, 45):
            rows.append(
                rng.choice(
                    [
                        f"Weight: {rng.uniform(0.05, 40):.2f} kg",
                        f"Dimensions (WxHxD): {rng.randint(3, 120)} x {rng.randint(3, 90)} x "
                        f"{rng.randint(1, 60)} mm",
                        f"Power: {rng.choice(['5V/2.4A', '230V~50Hz', '18V Li-ion', '65W PD'])}",
                        f"Item no.: {rng.randint(10**7, 10**8)}-{rng.choice(['EU', 'UK', 'US'])}",
                        f"Feature: {rng.choice(VOCAB[p.category]['attrs'])}",
                        f"Operating temp.: {rng.randint(-20, 0)}°C to +{rng.randint(35, 60)}°C",
                        f"GTIN: 0{rng.randint(10**11, 10**12)}",
                    ]
                )
            )
        return Text("\n".join(rows), "spec-sheet")
    body = _prose(rng, p, rng.randint(60, 140)).split(". ")
    html = []
    for sentence in body:
        html.append(rng.choice(HTML_BITS) + sentence + rng.choice(HTML_BITS))
    return Text(" ".join(html), "html")


def _query(rng: random.Random, p: _Product) -> Text:
    kind = rng.randrange(8)
    if kind == 0:
        return Text(rng.choice([p.noun.split()[-1], p.brand.split()[0], p.code]), "short")
    if kind == 1:
        return Text(_heavy_typos(rng, f"{p.brand} {p.noun} {p.attrs[0]}".lower()), "typo-heavy")
    if kind == 2:
        return Text(f"{p.brand} {p.noun} {p.size}".upper(), "all-caps")
    if kind == 3:
        local = rng.choice(NON_LATIN[p.category])
        return Text(local if rng.random() < 0.5 else f"{p.brand} {local}", "non-latin")
    if kind == 4:
        return Text(f"{rng.choice(LATIN[p.category])} {p.brand.lower()} {p.color}", "other-latin")
    if kind == 5:
        return Text(f"{p.brand} {p.code} {p.size} {p.attrs[-1]}", "codes-units")
    if kind == 6:
        e = rng.choice(EMOJI)
        return Text(f"{e} {p.noun} {p.color} {e}{rng.choice(EMOJI)}", "emoji")
    return Text(
        f"i'm looking for a {p.attrs[0]} {p.noun} {rng.choice(FILLER)} {p.size} "
        f"that costs less than {rng.randint(2, 40) * 10} euros, preferably {p.brand}",
        "natural-language",
    )


@cache
def search_split(seed: int = SEED, n_queries: int = 360, n_corpus: int = 840) -> Retrieval:
    rng = random.Random(seed)
    products = _products(rng, n_families=n_corpus // 3)
    rng.shuffle(products)
    products = products[:n_corpus]
    split = Retrieval("search")
    long_every = 8  # an eighth of the catalog is long text: prose, spec sheets, HTML
    for i, p in enumerate(products):
        split.corpus.append(_long_text(rng, p) if i % long_every == 1 else _title(rng, p))
    for _ in range(n_queries):
        target = rng.randrange(len(products))
        split.queries.append(_query(rng, products[target]))
        split.relevant.append([target])
    return split


@cache
def near_duplicate_split(
    seed: int = SEED + 1, n_queries: int = 240, n_corpus: int = 480
) -> Retrieval:
    """Queries are a variant's title re-worded, or the opening of its description; the corpus
    holds its siblings (same family, other colour/size), so the ranking is decided by details."""
    rng = random.Random(seed)
    products = _products(rng, n_families=n_corpus // 3)[:n_corpus]
    split = Retrieval("near-duplicates")
    for p in products:
        t = _title(rng, p)
        split.corpus.append(Text(t.text, "variant-title"))
    for _ in range(n_queries):
        target = rng.randrange(len(products))
        p = products[target]
        siblings = [i for i, q in enumerate(products) if q.family == p.family]
        if rng.random() < 0.5:
            text = f"{p.brand} {p.code} {p.noun} in {p.color}, {p.size}"
            split.queries.append(Text(text, "title-as-query"))
        else:
            split.queries.append(Text(_prose(rng, p, rng.randint(30, 70)), "description-as-query"))
        split.relevant.append(siblings)
    return split
