"""A seeded, deterministic e-commerce corpus: queries, product titles, descriptions, relevance.

Generated rather than stored (zero bytes in the package, identical on every machine for a
seed). The mix is built to be hard for quantized models the way real search traffic is:
typos, brands and model numbers, sizes with units, non-English queries and titles, and long
descriptions that run past the 256-token truncation limit.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cache

# category -> (product nouns, attribute pools, brands)
CATALOG: dict[str, dict[str, list[str]]] = {
    "running shoes": {
        "nouns": [
            "running shoes",
            "trail runners",
            "road running shoe",
            "racing flats",
            "jogging sneakers",
        ],
        "brands": [
            "Asics",
            "Brooks",
            "Hoka",
            "Saucony",
            "Nike",
            "Adidas",
            "New Balance",
            "On Running",
        ],
        "attrs": [
            "breathable mesh",
            "carbon plate",
            "wide fit",
            "waterproof GTX",
            "neutral cushioning",
            "stability",
            "lightweight",
        ],
        "sizes": ["size 7", "size 8.5", "size 10", "size 11 wide", "EU 42", "EU 44", "UK 9"],
        "colors": ["black/white", "neon yellow", "navy", "grey", "coral pink"],
    },
    "headphones": {
        "nouns": [
            "wireless headphones",
            "noise cancelling earbuds",
            "over-ear headphones",
            "gaming headset",
            "bluetooth earphones",
        ],
        "brands": [
            "Sony",
            "Bose",
            "Sennheiser",
            "JBL",
            "Apple",
            "Anker Soundcore",
            "Jabra",
            "Beyerdynamic",
        ],
        "attrs": [
            "active noise cancellation",
            "40h battery",
            "USB-C charging",
            "multipoint bluetooth 5.3",
            "hi-res audio",
            "IPX4 sweat resistant",
            "low latency mode",
        ],
        "sizes": ["40mm drivers", "10mm drivers", "250mAh case"],
        "colors": ["matte black", "silver", "midnight blue", "white"],
    },
    "laptops": {
        "nouns": ["laptop", "ultrabook", "gaming laptop", "2-in-1 convertible", "chromebook"],
        "brands": ["Lenovo", "Dell", "HP", "ASUS", "Acer", "Apple", "MSI", "Microsoft"],
        "attrs": [
            "16GB RAM",
            "32GB DDR5",
            "512GB SSD",
            "1TB NVMe",
            "RTX 4060",
            "Intel Core i7-13700H",
            "Ryzen 7 7840U",
            "OLED display",
            "144Hz",
            "backlit keyboard",
        ],
        "sizes": ["13.3 inch", '14"', "15.6 inch", "16-inch", "17.3in"],
        "colors": ["space grey", "platinum silver", "black"],
    },
    "kitchen": {
        "nouns": [
            "chef's knife",
            "non-stick frying pan",
            "cast iron skillet",
            "espresso machine",
            "air fryer",
            "stand mixer",
            "blender",
        ],
        "brands": [
            "Zwilling",
            "Tefal",
            "Lodge",
            "De'Longhi",
            "Philips",
            "KitchenAid",
            "Ninja",
            "Le Creuset",
        ],
        "attrs": [
            "stainless steel",
            "PFOA-free",
            "dishwasher safe",
            "induction compatible",
            "1500W",
            "15 bar pump",
            "pre-seasoned",
        ],
        "sizes": ["8 inch", "20cm", "28 cm", "5.5 qt", "4.7L", "1.5 litre", '12"'],
        "colors": ["red", "black", "cream", "stainless"],
    },
    "furniture": {
        "nouns": [
            "office chair",
            "standing desk",
            "bookshelf",
            "sofa bed",
            "bed frame",
            "dining table",
            "tv stand",
        ],
        "brands": [
            "IKEA",
            "Herman Miller",
            "Steelcase",
            "Flexispot",
            "Zinus",
            "Wayfair Basics",
            "Autonomous",
        ],
        "attrs": [
            "ergonomic lumbar support",
            "solid oak",
            "height adjustable",
            "memory foam",
            "easy assembly",
            "scratch resistant",
            "mid-century modern",
        ],
        "sizes": ["queen", "king size", "140x200 cm", "48 x 24 inch", "5-shelf", "3 seater"],
        "colors": ["walnut", "white oak", "charcoal grey", "black", "beige"],
    },
    "beauty": {
        "nouns": [
            "moisturizer",
            "vitamin C serum",
            "sunscreen SPF 50",
            "shampoo",
            "hair dryer",
            "electric toothbrush",
            "perfume",
        ],
        "brands": [
            "CeraVe",
            "La Roche-Posay",
            "The Ordinary",
            "L'Oréal",
            "Dyson",
            "Oral-B",
            "Chanel",
            "Nivea",
        ],
        "attrs": [
            "fragrance free",
            "for sensitive skin",
            "hyaluronic acid",
            "non-comedogenic",
            "sulfate-free",
            "ionic",
            "vegan",
        ],
        "sizes": ["50ml", "100 ml", "1.7 fl oz", "236ml", "8 oz", "3.4 oz"],
        "colors": ["rose gold", "white", "pink"],
    },
    "toys": {
        "nouns": [
            "building blocks set",
            "remote control car",
            "plush teddy bear",
            "board game",
            "puzzle",
            "doll house",
            "science kit",
        ],
        "brands": [
            "LEGO",
            "Hasbro",
            "Mattel",
            "Ravensburger",
            "Playmobil",
            "Melissa & Doug",
            "Hot Wheels",
        ],
        "attrs": [
            "ages 8+",
            "for toddlers",
            "educational STEM",
            "1000 pieces",
            "rechargeable battery",
            "2.4GHz",
            "family game night",
        ],
        "sizes": ["1:18 scale", "30cm", "12 inch", "500 pcs", "1500-piece"],
        "colors": ["multicolor", "red", "blue", "pastel"],
    },
    "tools": {
        "nouns": [
            "cordless drill",
            "impact driver",
            "circular saw",
            "socket set",
            "tape measure",
            "angle grinder",
            "tool box",
        ],
        "brands": ["DeWalt", "Makita", "Bosch", "Milwaukee", "Ryobi", "Stanley", "Festool"],
        "attrs": [
            "brushless motor",
            "18V",
            "20V MAX",
            "2 batteries included",
            "1/2 inch chuck",
            "LED work light",
            "metric and SAE",
        ],
        "sizes": ["125mm", "7-1/4 inch", "25 ft", "8m", "108-piece", "4.0Ah"],
        "colors": ["yellow", "teal", "red", "green"],
    },
    "phones": {
        "nouns": [
            "smartphone",
            "phone case",
            "screen protector",
            "wireless charger",
            "USB-C cable",
            "power bank",
        ],
        "brands": [
            "Samsung",
            "Apple",
            "Google Pixel",
            "Xiaomi",
            "OnePlus",
            "Spigen",
            "Belkin",
            "Anker",
        ],
        "attrs": [
            "5G unlocked",
            "128GB",
            "256 GB",
            "tempered glass",
            "MagSafe compatible",
            "fast charging 65W",
            "shockproof",
            "dual SIM",
        ],
        "sizes": ["6.1 inch", '6.7"', "10000mAh", "20000 mAh", "2m", "6ft"],
        "colors": ["phantom black", "titanium", "clear", "sage green", "lavender"],
    },
    "groceries": {
        "nouns": [
            "coffee beans",
            "green tea",
            "olive oil",
            "protein powder",
            "dark chocolate",
            "pasta",
            "almond milk",
        ],
        "brands": [
            "Lavazza",
            "Illy",
            "Twinings",
            "Filippo Berio",
            "Optimum Nutrition",
            "Lindt",
            "Barilla",
            "Alpro",
        ],
        "attrs": [
            "organic",
            "extra virgin",
            "whole bean",
            "85% cocoa",
            "gluten free",
            "unsweetened",
            "fair trade",
            "decaf",
        ],
        "sizes": ["1kg", "500g", "2 lb", "750ml", "1L", "100 bags", "6 x 1 litre"],
        "colors": [],
    },
    "clothing": {
        "nouns": [
            "winter jacket",
            "rain coat",
            "wool sweater",
            "slim fit jeans",
            "t-shirt",
            "hoodie",
            "leggings",
        ],
        "brands": [
            "Patagonia",
            "The North Face",
            "Levi's",
            "Uniqlo",
            "H&M",
            "Zara",
            "Columbia",
            "Lululemon",
        ],
        "attrs": [
            "waterproof",
            "merino wool",
            "organic cotton",
            "down insulated",
            "recycled polyester",
            "high waisted",
            "packable",
        ],
        "sizes": ["size M", "XL", "XXL", "32W x 30L", "size S", "women's 10"],
        "colors": ["olive", "black", "heather grey", "navy blue", "burgundy"],
    },
    "pets": {
        "nouns": [
            "dry dog food",
            "cat litter",
            "dog bed",
            "cat scratching post",
            "aquarium filter",
            "dog leash",
        ],
        "brands": ["Royal Canin", "Purina", "Hill's", "Kong", "Catit", "Tetra", "Ruffwear"],
        "attrs": [
            "grain free",
            "for small breeds",
            "clumping",
            "orthopedic",
            "senior formula",
            "reflective",
            "salmon recipe",
        ],
        "sizes": ["12kg", "30 lb", "large", "75 litre", "6ft", "XL 120cm"],
        "colors": ["grey", "brown", "red"],
    },
}

# (language, phrase templates) for non-English queries and some titles; {brand}/{noun} filled in.
FOREIGN: dict[str, dict[str, str]] = {
    "de": {
        "running shoes": "laufschuhe herren",
        "headphones": "kabellose kopfhörer",
        "laptops": "laptop günstig",
        "kitchen": "bratpfanne antihaft",
        "furniture": "bürostuhl ergonomisch",
        "beauty": "feuchtigkeitscreme empfindliche haut",
        "toys": "bausteine kinder",
        "tools": "akkuschrauber",
        "phones": "handyhülle",
        "groceries": "kaffeebohnen",
        "clothing": "winterjacke damen",
        "pets": "hundefutter trocken",
    },
    "es": {
        "running shoes": "zapatillas running mujer",
        "headphones": "auriculares inalámbricos",
        "laptops": "portátil gaming",
        "kitchen": "sartén antiadherente",
        "furniture": "silla de oficina",
        "beauty": "protector solar",
        "toys": "juguetes educativos",
        "tools": "taladro inalámbrico",
        "phones": "funda móvil",
        "groceries": "aceite de oliva virgen extra",
        "clothing": "chaqueta impermeable",
        "pets": "cama para perro",
    },
    "fr": {
        "running shoes": "chaussures de course",
        "headphones": "casque bluetooth sans fil",
        "laptops": "ordinateur portable",
        "kitchen": "poêle à frire",
        "furniture": "bureau assis debout",
        "beauty": "sérum vitamine c",
        "toys": "jeu de société",
        "tools": "perceuse sans fil",
        "phones": "chargeur sans fil",
        "groceries": "chocolat noir",
        "clothing": "pull en laine",
        "pets": "litière pour chat",
    },
    "ja": {
        "running shoes": "ランニングシューズ",
        "headphones": "ワイヤレスイヤホン",
        "laptops": "ノートパソコン",
        "kitchen": "フライパン",
        "furniture": "オフィスチェア",
        "beauty": "日焼け止め",
        "toys": "知育玩具",
        "tools": "電動ドリル",
        "phones": "スマホケース",
        "groceries": "緑茶",
        "clothing": "ダウンジャケット",
        "pets": "ドッグフード",
    },
}

DESCRIPTION_SENTENCES = [
    "Designed for everyday use, the {noun} from {brand} combines {attr} with {attr2} for reliable performance.",
    "Customers love the {attr} and say it is worth every penny compared with cheaper alternatives.",
    "Package includes the {noun}, a quick start guide and a {warranty} warranty from {brand}.",
    "Measures {size} and ships in recyclable packaging; available in {color}.",
    "Please check the size chart before ordering, as this model runs slightly {fit}.",
    "Not suitable for children under 3 years; keep away from open flame and direct sunlight.",
    "Our support team answers questions within 24 hours, Monday to Saturday.",
    "Compared to the previous generation it is {pct}% lighter and offers improved {attr}.",
    "Free returns within 30 days if you are not completely satisfied with your purchase.",
    "Made with {attr} and tested to strict quality standards in our own lab.",
    "Tip: pair it with other {category} products to complete your setup.",
    "Important: the colour may vary slightly from the photos due to screen settings.",
    "Model number {model}; compatible accessories are sold separately.",
    "Care instructions: wipe clean with a damp cloth, do not bleach, air dry only.",
    "Rated {rating} out of 5 stars by more than {reviews} verified buyers.",
]

TYPO_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


@dataclass(frozen=True)
class Product:
    id: str
    category: str
    brand: str
    noun: str
    title: str
    description: str


@dataclass(frozen=True)
class RelevanceGroup:
    """A query and candidate products with graded relevance (2 exact, 1 same category, 0 other)."""

    query: str
    product_ids: list[str]
    grades: list[int]


@dataclass
class Corpus:
    queries: list[str] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    groups: list[RelevanceGroup] = field(default_factory=list)

    @property
    def titles(self) -> list[str]:
        return [p.title for p in self.products]

    @property
    def descriptions(self) -> list[str]:
        return [p.description for p in self.products if p.description]

    def product(self, product_id: str) -> Product:
        return self._by_id[product_id]

    def __post_init__(self) -> None:
        self._by_id = {p.id: p for p in self.products}


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.35:  # swap
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 0.65:  # drop
        return word[:i] + word[i + 1 :]
    if kind < 0.85:  # substitute
        return word[:i] + rng.choice(TYPO_KEYBOARD) + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double


def _model_number(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKMNPRSTVWXZ") for _ in range(rng.randint(1, 3)))
    return f"{letters}-{rng.randint(10, 9999)}{rng.choice(['', 'X', 'Pro', 'S', 'i'])}"


def _title(
    rng: random.Random, category: str, spec: dict[str, list[str]], brand: str, noun: str
) -> str:
    attrs = rng.sample(spec["attrs"], k=min(len(spec["attrs"]), rng.randint(2, 5)))
    parts = [brand, noun.title() if rng.random() < 0.5 else noun]
    if rng.random() < 0.6:
        parts.append(_model_number(rng))
    parts.extend(attrs)
    if spec["sizes"] and rng.random() < 0.8:
        parts.append(rng.choice(spec["sizes"]))
    if spec["colors"] and rng.random() < 0.7:
        parts.append(rng.choice(spec["colors"]))
    extra = [
        "for men",
        "for women",
        "unisex",
        "2-pack",
        "new 2025 model",
        "bestseller",
        "gift idea",
        f"by {brand}",
        "with free shipping",
        "limited edition",
        "refurbished",
        "value bundle",
    ]
    while len(" ".join(parts).split()) < rng.randint(8, 30):
        parts.append(rng.choice(extra + spec["attrs"]))
    sep = rng.choice([" ", " - ", ", ", " | "])
    title = sep.join(parts)
    words = title.split()
    return " ".join(words[:30])


def _description(
    rng: random.Random, category: str, spec: dict[str, list[str]], brand: str, noun: str
) -> str:
    target_words = rng.randint(40, 150)
    sentences: list[str] = []
    pool = DESCRIPTION_SENTENCES[:]
    rng.shuffle(pool)
    i = 0
    while len(" ".join(sentences).split()) < target_words:
        template = pool[i % len(pool)]
        i += 1
        sentences.append(
            template.format(
                noun=noun,
                brand=brand,
                attr=rng.choice(spec["attrs"]),
                attr2=rng.choice(spec["attrs"]),
                size=rng.choice(spec["sizes"] or ["standard size"]),
                color=rng.choice(spec["colors"] or ["one colour"]),
                warranty=rng.choice(["1-year", "2-year", "lifetime", "5 year"]),
                fit=rng.choice(["small", "large", "narrow"]),
                pct=rng.randint(5, 40),
                category=category,
                model=_model_number(rng),
                rating=rng.choice(["4.2", "4.5", "4.7", "3.9"]),
                reviews=rng.choice(["1,200", "850", "12k", "300"]),
            )
        )
    words = " ".join(sentences).split()
    return " ".join(words[:target_words]).rstrip(",;") + (
        "" if words[target_words - 1 : target_words] == ["."] else "."
    )


def _spec_sheet(rng: random.Random, spec: dict[str, list[str]], brand: str) -> str:
    """A number-dense specification block: few words, many word pieces (runs past 256 tokens)."""
    parts: list[str] = []
    while len(" ".join(parts).split()) < rng.randint(110, 150):
        parts.append(
            rng.choice(
                [
                    f"SKU {_model_number(rng)}-{rng.randint(100, 999)}/{rng.choice(['BLK', 'WHT', 'XL', 'EU'])};",
                    f"EAN {rng.randint(10**12, 10**13 - 1)};",
                    f"dims {rng.uniform(5, 90):.1f}x{rng.uniform(5, 60):.1f}x{rng.uniform(1, 40):.1f}cm;",
                    f"weight {rng.uniform(0.1, 25):.2f}kg/{rng.uniform(0.2, 55):.2f}lb;",
                    f"{rng.choice(spec['attrs'])};",
                    f"voltage {rng.choice(['110-240V', '12V/2A', '5V⎓3A', '20V'])};",
                    f"cert CE/FCC/RoHS/UKCA-{rng.randint(1000, 9999)};",
                    f"ref#{brand[:3].upper()}{rng.randint(10000, 99999)}",
                ]
            )
        )
    return "Specifications: " + " ".join(parts)


def _query_for(rng: random.Random, product: Product, spec: dict[str, list[str]]) -> str:
    kind = rng.random()
    noun_words = product.noun.lower().split()
    if kind < 0.09:  # non-English
        lang = rng.choice(list(FOREIGN))
        base = FOREIGN[lang][product.category]
        q = f"{base} {product.brand.lower()}" if rng.random() < 0.5 else base
    elif kind < 0.25:  # model number / brand lookup
        model = next(
            (
                w.strip(",|")
                for w in product.title.split()
                if "-" in w and any(c.isdigit() for c in w)
            ),
            None,
        )
        q = f"{product.brand} {model}" if model else f"{product.brand} {product.noun}"
    else:
        words = [*noun_words]
        if rng.random() < 0.6:
            words.insert(0, product.brand.lower())
        if rng.random() < 0.5:
            words.append(rng.choice(spec["attrs"]).lower())
        if spec["sizes"] and rng.random() < 0.35:
            words.append(rng.choice(spec["sizes"]).lower())
        if spec["colors"] and rng.random() < 0.25:
            words.append(rng.choice(spec["colors"]))
        if rng.random() < 0.15:
            words.insert(0, rng.choice(["best", "cheap", "buy", "sale", "gift"]))
        q = " ".join(words)
    words = q.split()[:8]
    if len(words) < 2:
        words.append(rng.choice(["sale", "deal", "new", "online"]))
    if rng.random() < 0.22:  # typos
        j = rng.randrange(len(words))
        words[j] = _typo(rng, words[j])
    return " ".join(words)


@cache
def generate(
    seed: int = 20261129, n_products: int = 5200, n_descriptions: int = 1200, n_queries: int = 2400
) -> Corpus:
    """The shipped corpus. Deterministic for a seed; cached per process."""
    rng = random.Random(seed)
    categories = sorted(CATALOG)
    products: list[Product] = []
    for i in range(n_products):
        category = categories[i % len(categories)]
        spec = CATALOG[category]
        brand, noun = rng.choice(spec["brands"]), rng.choice(spec["nouns"])
        title = _title(rng, category, spec, brand, noun)
        if rng.random() < 0.05:  # some non-English titles
            lang = rng.choice(list(FOREIGN))
            title = f"{brand} {FOREIGN[lang][category]} {' '.join(title.split()[2:10])}"
        description = ""
        if i < n_descriptions:
            if i % 12 == 5:
                description = _spec_sheet(rng, spec, brand)
            else:
                description = _description(rng, category, spec, brand, noun)
        products.append(Product(f"p{i:05d}", category, brand, noun, title, description))

    queries: list[str] = []
    groups: list[RelevanceGroup] = []
    by_category: dict[str, list[Product]] = {c: [] for c in categories}
    for p in products:
        by_category[p.category].append(p)
    for _ in range(n_queries):
        target = products[rng.randrange(len(products))]
        q = _query_for(rng, target, CATALOG[target.category])
        queries.append(q)
        same = [p for p in rng.sample(by_category[target.category], 8) if p.id != target.id][:5]
        other_cats = [c for c in categories if c != target.category]
        others = [rng.choice(by_category[rng.choice(other_cats)]) for _ in range(4)]
        cands = [(target, 2)] + [(p, 1) for p in same] + [(p, 0) for p in others]
        rng.shuffle(cands)
        groups.append(RelevanceGroup(q, [p.id for p, _ in cands], [g for _, g in cands]))
    return Corpus(queries=queries, products=products, groups=groups)


def _is_eval(key: str, eval_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    return h / 2**32 < eval_fraction


@dataclass(frozen=True)
class Split:
    """Calibration and evaluation text for one task, plus a stable digest of each."""

    calibration: list  # list[str] or list[tuple[str, str]]
    evaluation: list
    queries_eval: list[str]  # embedding: the retrieval queries
    products_eval: list[str]  # embedding: the retrieval corpus
    groups_eval: list[tuple[str, list[str], list[int]]]  # rerank: query groups


def split(corpus: Corpus, *, eval_fraction: float = 0.2) -> tuple[Corpus, Corpus]:
    """Disjoint calibration / evaluation corpora (by a hash of the text, stable across seeds)."""
    cal, ev = Corpus(), Corpus()
    for q in corpus.queries:
        (ev if _is_eval("q:" + q, eval_fraction) else cal).queries.append(q)
    for p in corpus.products:
        (ev if _is_eval("p:" + p.id, eval_fraction) else cal).products.append(p)
    for g in corpus.groups:
        (ev if _is_eval("q:" + g.query, eval_fraction) else cal).groups.append(g)
    cal.__post_init__()
    ev.__post_init__()
    return cal, ev
