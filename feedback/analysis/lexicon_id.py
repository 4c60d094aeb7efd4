"""Indonesian sentiment lexicon, with the informal spellings of marketplace
reviews and app-store comments (gk, bgt, tp, bgus, mantul)."""

from feedback.analysis.lexicon import Lexicon, weighted, word_set

LEXICON = Lexicon(
    language="id",
    valence={
        **weighted(
            3.0,
            "mantap mantab mantep mantul mantaap sempurna terbaik memuaskan"
            " istimewa luarbiasa",
        ),
        **weighted(
            2.0,
            "bagus bgus bgs baguss keren puas senang seneng ramah amanah joss jos"
            " sip sipp cantik rekomen rekomended rekomendasi jempol makasih"
            " terimakasih trims tengkyu alhamdulillah cakep kece berkah suka"
            " lancar nyaman awet cocok enak rapi rapih responsif fast"
            " mulus memuaskan",
        ),
        **weighted(
            1.5,
            "baik cepat cepet cpt sesuai ssuai berfungsi lucu kokoh halus tebal"
            " aman membantu mudah gampang praktis lengkap hemat laris sukses"
            " semangat langganan untung worth",
        ),
        **weighted(
            1.0,
            "oke ok okey murah lumayan selamat original ori asli kasih bisa",
        ),
        **weighted(
            -3.0,
            "mengecewakan kapok penipu penipuan tipu nipu sampah nyesel menyesal"
            " ngecewain zonk hancur bohong",
        ),
        **weighted(
            -2.5,
            "kecewa jelek jlek jelk buruk parah palsu abal rusak cacat busuk",
        ),
        **weighted(
            -2.0,
            "pecah sobek bocor lemot lelet kesal kesel marah gagal sedih"
            " bermasalah ribet mati error eror ngelag lag penyok luntur kotor"
            " ngadat hang lambat telat terlambat batal dibatalkan",
        ),
        **weighted(
            -1.5,
            "susah sulit hilang bau kasar malas males lama lecet masalah kendala"
            " komplain perbaiki diperbaiki uninstall nyangkut ditolak tipis",
        ),
        **weighted(
            -1.0,
            "mahal kurang retur refund pending boros sempit longgar kecil beda"
            " berbeda tolong kenapa knp sayang ganggu gangguan kw banyak"
            " iklan keluar",
        ),
        **weighted(
            -2.0,
            "payah rugi rekondisi jamuran boong robek salah",
        ),
        **weighted(-1.5, "bekas letoy ragu"),
        **weighted(-1.0, "licin"),
        **weighted(1.5, "jujur layak"),
        **weighted(3.0, "mantaf mntap matap matab mantab"),
        **weighted(2.5, "menyenangkan terpercaya"),
        **weighted(2.0, "menarik"),
        **weighted(1.5, "berguna memudahkan"),
        **weighted(1.0, "mayan okelah"),
        **weighted(1.0, "bs fungsi"),
        **weighted(
            0.5, "dibalas balas dibales respon sampai nyampe sampe terima diterima"
        ),
        **weighted(0.2, "ada sama dikirim datang nongol muncul"),
    },
    negated={
        **weighted(-2.5, "berfungsi fungsi sesuai puas amanah jujur"),
        **weighted(-2.0, "sampai sampe nyampe terima diterima layak dikirim datang"),
        **weighted(-2.0, "dibalas balas dibales respon bagus bisa bs nongol"),
        **weighted(-1.5, "ada sama muncul"),
    },
    negators=word_set(
        "tidak tdk gak ga gk g nggak ngga ngak enggak engga ndak nda kagak tak"
        " bukan bkn belum blm blum jangan jgn kurang tanpa"
    ),
    intensifiers={
        **weighted(1.6, "sangat sgt amat sungguh paling"),
        **weighted(1.3, "terlalu super bener bener2 benar"),
        **weighted(0.7, "cukup agak lumayan sedikit"),
    },
    post_intensifiers={
        **weighted(1.6, "banget bgt bngt bangett bgtt sekali skali sekalii"),
        **weighted(1.4, "pol poll abis bener amat parah"),
    },
    contrast=word_set("tapi tp tpi tetapi namun cuma cuman sayangnya"),
    function_words=word_set(
        "yang yg dan dgn di ke dari dr ini itu aja saja sudah udah udh sdh dah"
        " barang brg barangnya kurir pengiriman juga jg dengan untuk utk buat"
        " sama sm ada pas seller penjual lagi lg karena krn kalau kalo klo kok"
        " deh sih dong ya jadi jd mau masih msh harga beli pesan pesanan produk"
        " packing semoga min kak gan apk aplikasi tolong gimana gmn banyak bnyk"
        " lebih dapat dapet dpt kami saya aku gue gw kamu mereka pakai pake"
        " kualitas ukuran warna nya pengemasan dikirim kirim paket toko"
        " sekarang skrg selalu terus trs setelah sebelum kemarin hari"
        " pembayaran bayar akun belanja gratis ongkir saldo dana"
    ),
    loanwords={
        **weighted(2.0, "good nice recommended recomended best thanks thank gud"),
        **weighted(1.5, "top fast like"),
        **weighted(-1.5, "bug slow"),
    },
)
