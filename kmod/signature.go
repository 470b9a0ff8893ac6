package kmod

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// SignatureMagic ends every module that carries an appended signature.
const SignatureMagic = "~Module signature appended~\n"

// moduleSignatureSize is sizeof(struct module_signature): u8 algo, u8 hash,
// u8 id_type, u8 signer_len, u8 key_id_len, u8 pad[3], __be32 sig_len.
const moduleSignatureSize = 12

// idPKCS7 is module_signature.id_type for a PKCS#7 (CMS) signature, the
// only kind the kernel accepts since 4.x.
const idPKCS7 = 2

// splitSignature separates an image into the signed ELF part and the
// signature. It returns the whole image and a zero Signature when there is no
// trailer. A trailer whose struct module_signature does not fit gives a
// Signature with Present and Err set, and the image minus the magic.
func splitSignature(img []byte) (elf []byte, sig Signature) {
	if !bytes.HasSuffix(img, []byte(SignatureMagic)) {
		return img, Signature{}
	}
	sig.Present = true
	rest := img[:len(img)-len(SignatureMagic)]
	if len(rest) < moduleSignatureSize {
		sig.Err = "signature trailer without room for struct module_signature"
		return rest, sig
	}
	ms := rest[len(rest)-moduleSignatureSize:]
	idType := ms[2]
	signerLen, keyIDLen := ms[3], ms[4]
	sigLen := uint64(binary.BigEndian.Uint32(ms[8:]))
	rest = rest[:len(rest)-moduleSignatureSize]
	total := sigLen + uint64(signerLen) + uint64(keyIDLen)
	if total > uint64(len(rest)) {
		sig.Err = fmt.Sprintf("signature length %d exceeds the %d bytes before it", total, len(rest))
		return rest, sig
	}
	blob := rest[uint64(len(rest))-sigLen:]
	elf = rest[:uint64(len(rest))-total]
	if idType != idPKCS7 {
		sig.Err = fmt.Sprintf("signature id_type %d is not PKCS#7 (%d)", idType, idPKCS7)
		return elf, sig
	}
	if err := sig.fromPKCS7(blob); err != nil {
		sig.Err = err.Error()
	}
	return elf, sig
}

// fromPKCS7 fills Signer, KeyID and HashAlgo from a PKCS#7 SignedData blob.
// Kernel modules carry no certificates, so the signer is named by its
// issuer and serial number; when a certificate is included after all, its
// subject and SubjectKeyIdentifier are preferred.
func (s *Signature) fromPKCS7(blob []byte) (err error) {
	if len(blob) == 0 {
		return errors.New("empty PKCS#7 signature")
	}
	defer func() {
		// The ASN.1 code is not ours to vouch for on hostile input: a
		// panic there becomes an unparseable signature, not a crash.
		if r := recover(); r != nil {
			err = fmt.Errorf("parse PKCS#7: %v", r)
		}
	}()
	p7, err := pkcs7.Parse(blob)
	if err == nil && len(p7.Signers) == 0 {
		err = errors.New("no signer")
	}
	if err != nil {
		// sign-file -k names the signer by SubjectKeyIdentifier (CMS
		// version 3), which the PKCS#7 parser does not take.
		if kerr := s.fromCMSKeyID(blob); kerr == nil {
			return nil
		}
		return fmt.Errorf("parse PKCS#7: %w", err)
	}
	si := p7.Signers[0]
	s.HashAlgo = hashName(si.DigestAlgorithm.Algorithm)
	serial := si.IssuerAndSerialNumber.SerialNumber
	for _, c := range p7.Certificates {
		if serial != nil && c.SerialNumber.Cmp(serial) == 0 {
			s.Signer = c.Subject.CommonName
			if s.Signer == "" {
				s.Signer = c.Subject.String()
			}
			if len(c.SubjectKeyId) > 0 {
				s.KeyID = hex.EncodeToString(c.SubjectKeyId)
			}
		}
	}
	if s.Signer == "" {
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(si.IssuerAndSerialNumber.IssuerName.FullBytes, &rdn); err != nil {
			return fmt.Errorf("parse PKCS#7 signer issuer: %w", err)
		}
		var name pkix.Name
		name.FillFromRDNSequence(&rdn)
		s.Signer = name.CommonName
		if s.Signer == "" {
			s.Signer = name.String()
		}
	}
	if s.KeyID == "" && serial != nil {
		s.KeyID = hex.EncodeToString(serial.Bytes())
	}
	return nil
}

// cmsSignerKeyID is the part of a CMS SignerInfo that names its signer by
// key: SignerIdentifier [0] IMPLICIT SubjectKeyIdentifier (RFC 5652 5.3).
type cmsSignerKeyID struct {
	Version         int
	KeyID           []byte `asn1:"tag:0"`
	DigestAlgorithm pkix.AlgorithmIdentifier
	Rest            []asn1.RawValue `asn1:"optional"`
}

// cmsSignedData is RFC 5652 SignedData with only the signer infos decoded.
type cmsSignedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContent     asn1.RawValue
	Certificates     asn1.RawValue    `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue    `asn1:"optional,tag:1"`
	SignerInfos      []cmsSignerKeyID `asn1:"set"`
}

type cmsContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

// fromCMSKeyID reads a signature whose signer is named by key identifier.
// There is no issuer to name it by, so Signer is the key id too.
func (s *Signature) fromCMSKeyID(blob []byte) error {
	var ci cmsContentInfo
	if rest, err := asn1.Unmarshal(blob, &ci); err != nil || len(rest) > 0 || !ci.ContentType.Equal(pkcs7.OIDSignedData) {
		return errors.New("not a CMS SignedData")
	}
	var sd cmsSignedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) > 0 {
		return fmt.Errorf("parse CMS SignedData: %w", err)
	}
	if len(sd.SignerInfos) == 0 || len(sd.SignerInfos[0].KeyID) == 0 {
		return errors.New("CMS SignedData has no signer key id")
	}
	si := sd.SignerInfos[0]
	s.KeyID = hex.EncodeToString(si.KeyID)
	s.Signer = "key " + s.KeyID
	s.HashAlgo = hashName(si.DigestAlgorithm.Algorithm)
	return nil
}

func hashName(oid asn1.ObjectIdentifier) string {
	for _, h := range []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{
		{pkcs7.OIDDigestAlgorithmSHA1, "sha1"},
		{pkcs7.OIDDigestAlgorithmSHA224, "sha224"},
		{pkcs7.OIDDigestAlgorithmSHA256, "sha256"},
		{pkcs7.OIDDigestAlgorithmSHA384, "sha384"},
		{pkcs7.OIDDigestAlgorithmSHA512, "sha512"},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 8}, "sha3-256"},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 9}, "sha3-384"},
		{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 10}, "sha3-512"},
	} {
		if oid.Equal(h.oid) {
			return h.name
		}
	}
	return oid.String()
}
