"""Default topics and their keywords, loaded by a data migration.

Admins edit topics and keywords in the admin afterwards; the migration only
creates what is missing and never overwrites an admin's change.
"""

# slug -> (name, {language: [keyword, ...]}). A trailing * matches a prefix.
DEFAULT_TOPICS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "delivery": (
        "Delivery",
        {
            "en": ["deliver*", "shipping", "shipped", "shipment", "courier", "arriv*",
                   "package", "parcel", "late", "delay*", "tracking", "lost luggage",
                   "luggage", "baggage", "flight delay*", "late flight", "cancelled flight",
                   "cancelled", "canceled", "bags", "lost bag*", "suitcase", "stranded",
                   "missed connection", "missed my connection", "connecting flight",
                   "rebook*", "tarmac", "runway", "on time", "diverted", "in transit"],
            "id": ["kirim*", "pengiriman", "dikirim", "kurir", "sampai", "nyampe",
                   "paket", "ekspedisi", "lama", "lambat", "telat", "ongkir", "resi", "jne",
                   "jnt", "j&t", "sicepat", "packing", "dipacking", "pengemasan"],
            "pt": ["entreg*", "chegou", "chegar", "chegaram", "prazo", "atras*",
                   "correio*", "transportadora", "frete", "rastre*", "recebi", "nao recebi",
                   "não recebi", "nao receb*", "não receb*", "recebimento", "nao chegou",
                   "não chegou", "demor*", "envio", "enviado", "extraviad*"],
        },
    ),
    "payment-checkout": (
        "Payment and checkout",
        {
            "en": ["payment", "pay", "paid", "charge*", "refund*", "checkout",
                   "credit card", "billing", "bill", "invoice", "price match", "booking",
                   "book a flight", "reservation"],
            "id": ["bayar", "pembayaran", "dibayar", "refund", "dana", "saldo",
                   "shopeepay", "spaylater", "paylater", "checkout", "co", "voucher",
                   "cashback", "tagihan", "cod", "transfer", "pengembalian dana"],
            "pt": ["pagamento", "pag*", "boleto", "cartão", "cartao", "cobran*",
                   "estorno", "reembolso", "cobrad*", "compra", "parcel*"],
        },
    ),
    "website-app-bugs": (
        "Website and app bugs",
        {
            "en": ["website", "site", "app", "application", "login", "log in", "password",
                   "error", "bug*", "crash*", "page", "online", "wifi", "wi-fi", "broadband",
                   "internet", "connection", "router", "outage", "down"],
            "id": ["aplikasi", "apk", "app", "error", "eror", "bug", "login", "masuk",
                   "otp", "update", "versi", "lemot", "loading", "crash", "keluar sendiri",
                   "tidak bisa dibuka", "gangguan", "sinyal", "live"],
            "pt": ["site", "aplicativo", "app", "erro", "senha", "login", "sistema",
                   "cadastro", "página", "pagina"],
        },
    ),
    "product-quality": (
        "Product quality",
        {
            "en": ["quality", "broken", "defect*", "damaged", "torn", "ripped", "fabric",
                   "material", "fit*", "size", "sizing", "small", "large", "tight", "loose",
                   "cheap", "flimsy", "stain*", "hole*", "wash*", "color", "colour"],
            "id": ["kualitas", "rusak", "cacat", "pecah", "bahan", "jahitan", "ukuran",
                   "kekecilan", "kebesaran", "sobek", "luntur", "tipis", "kw", "palsu",
                   "original", "ori", "mati", "tidak berfungsi", "gak berfungsi", "warna"],
            "pt": ["qualidade", "quebrad*", "defeito*", "danificad*", "material",
                   "tamanho", "falsificad*", "produto errado", "diferente", "veio errado",
                   "não funciona", "nao funciona", "cor", "original", "originalidade",
                   "foto*", "anunciad*", "anuncio", "propaganda", "errad*", "outro produto",
                   "veio outr*", "mandaram outr*", "pequen*", "fino", "fina", "risc*",
                   "arranhad*", "avaria*", "vazando", "vazament*", "destruid*",
                   "rasgad*", "manchad*", "acabamento", "tecido", "estragad*", "trocar",
                   "troca", "devolu*", "ruim", "péssima qualidade", "pessima qualidade"],
        },
    ),
    "customer-service": (
        "Customer service",
        {
            "en": ["customer service", "service", "support", "agent", "staff", "rude",
                   "help*", "call center", "hold", "on hold", "representative", "crew",
                   "flight attendant*", "attendant*", "engineer", "complain*", "response",
                   "customer care", "phone", "call*", "hung up", "hang up", "disconnected",
                   "wait time*", "email*", "respond*", "answer*", "unprofessional",
                   "attitude", "manager", "supervisor", "employee*", "gate agent",
                   "communication", "no one"],
            "id": ["cs", "customer service", "pelayanan", "layanan", "respon", "admin",
                   "penjual", "seller", "komplain", "keluhan", "ramah", "judes", "chat",
                   "dibalas", "balas"],
            "pt": ["atendimento", "atendente", "suporte", "vendedor", "resposta",
                   "reclamação", "reclamacao", "contato", "sac"],
        },
    ),
    "price": (
        "Price",
        {
            "en": ["price*", "pricing", "expensive", "cost*", "overpriced", "value",
                   "worth", "fee*", "discount", "sale", "cheaper"],
            "id": ["harga", "mahal", "murah", "diskon", "promo", "worth", "sepadan",
                   "ongkos", "biaya"],
            "pt": ["preço", "preco", "caro", "barato", "valor", "desconto", "custo"],
        },
    ),
}


def seed_topics(apps) -> None:
    Topic = apps.get_model("feedback", "Topic")
    TopicKeyword = apps.get_model("feedback", "TopicKeyword")
    for slug, (name, keywords) in DEFAULT_TOPICS.items():
        topic, created = Topic.objects.get_or_create(slug=slug, defaults={"name": name})
        if not created:
            continue
        TopicKeyword.objects.bulk_create(
            [
                TopicKeyword(topic=topic, language=language, phrase=phrase)
                for language, phrases in keywords.items()
                for phrase in dict.fromkeys(phrases)
            ]
        )
